"""``optimize_for_inference``: a frozen, faster copy of a SlowFast model that computes the same outputs.

It is a transformation of the model, not a second definition of the network: the copy keeps the
original's modules and forward, and only these parts are swapped (BN folding, channels_last_3d and
CUDA graphs as measured in BASELINE.md; the oneDNN convs measured on CPU, about 1.5x faster than
``F.conv3d`` summed over the backbone's convs):

- every conv -> eval-mode BatchNorm (-> ReLU) of a :class:`~slowfast_fast.models.layers.ConvModule`
  becomes one :class:`FoldedConv3d`: the BN folded into the conv's weight and bias;
- each residual block's last conv also adds the shortcut and applies the block's ReLU
  (``fused_tail`` of :mod:`slowfast_fast.models.blocks`);
- on CPU, :class:`FoldedConv3d` runs oneDNN's convolution with the weight packed once for the input
  shape and the bias, shortcut add and ReLU as post-ops (what inductor's freezing passes emit, without
  compiling); elsewhere ``F.conv3d`` and in-place epilogues (cuDNN);
- the weights and the input (converted once, on entry) in ``torch.channels_last_3d``;
- on CUDA, the forward captured into a CUDA graph per input shape and replayed.

The laterals keep running as :func:`slowfast_fast.ops.lateral_concat`, which folds their BN into its
per-channel scale/shift already. The original model is left untouched.
"""

from __future__ import annotations

import copy
import functools
from collections.abc import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.nn.modules.batchnorm import _BatchNorm
from torch.utils._pytree import tree_flatten, tree_map

from slowfast_fast._precision import autocast_enabled
from slowfast_fast.models.blocks import _ResidualBlock
from slowfast_fast.models.layers import ConvModule, folded_batch_norm, uses_batch_stats
from slowfast_fast.models.resnet3d_slowfast import ResNet3dPathway
from slowfast_fast.models.training import _CL, convert_5d_tensors

__all__ = ["FoldedConv3d", "OptimizedForInference", "optimize_for_inference"]


@functools.cache
def _onednn_dtypes() -> tuple[torch.dtype, ...]:
    """The dtypes oneDNN's fused convolution serves on this CPU."""
    if not torch.backends.mkldnn.is_available():
        return ()
    if torch.ops.mkldnn._is_mkldnn_bf16_supported():
        return (torch.float32, torch.bfloat16)
    return (torch.float32,)


class FoldedConv3d(nn.Module):
    """``act(conv3d(x, weight, bias) [+ residual])``: a conv whose eval-mode BN is folded into
    ``weight`` and ``bias``, with the shortcut add and the activation as its epilogue.

    Built by :meth:`from_conv_module`; inference only (its parameters do not require grad, and with
    gradients enabled it takes the plain ``F.conv3d`` path so autograd stays correct).

    Args:
        weight, bias: the folded conv parameters (``bias`` may be None).
        stride, padding, dilation, groups: as ``nn.Conv3d``.
        activation: ``None``, an ``nn.ReLU`` (fused into the conv), or any other activation module
            (applied after the conv and the residual add).
    """

    def __init__(
        self,
        weight: torch.Tensor,
        bias: torch.Tensor | None,
        stride: tuple[int, int, int],
        padding: tuple[int, int, int],
        dilation: tuple[int, int, int],
        groups: int,
        activation: nn.Module | None,
    ) -> None:
        super().__init__()
        self.weight = nn.Parameter(weight, requires_grad=False)
        self.bias = None if bias is None else nn.Parameter(bias, requires_grad=False)
        self.stride, self.padding, self.dilation, self.groups = stride, padding, dilation, groups
        # oneDNN's argument order, built once: a forward runs ~100 of these convs.
        self._onednn_args = (list(padding), list(stride), list(dilation), groups)
        self.relu = type(activation) is nn.ReLU
        self.activation = None if self.relu else activation
        # oneDNN weights packed for one input shape: {input shape: (packed weight, output shape)},
        # dropped whenever the weight is replaced (another Parameter: ``load_state_dict(assign=True)``;
        # other memory under the same one: ``.to()``, ``load_state_dict``) or modified in place through
        # it (its version counter; writes through ``weight.data`` or another alias of its memory are
        # not seen, as by any cache keyed on versions). ``_packed_for`` = (the Parameter, its storage,
        # address, version, dtype): holding the storage keeps a replacement from being allocated at the
        # address the key names (glibc handed a freed weight's block to the next one).
        self._packed: dict[tuple[int, ...], tuple[torch.Tensor, torch.Size]] = {}
        self._packed_for: tuple | None = None

    @classmethod
    def from_conv_module(cls, module: ConvModule, activation: nn.Module | None = None) -> FoldedConv3d | None:
        """The folded form of a Conv3d ``ConvModule`` whose norm (if any) is a BatchNorm that uses
        its running statistics; ``None`` for anything else (kept as it is). ``activation`` overrides
        the module's own (used for a block's last conv, which takes the block's activation)."""
        conv = module.conv
        if type(conv) is not nn.Conv3d or conv.padding_mode != "zeros" or isinstance(conv.padding, str):
            return None
        norm = module.norm
        if norm is not None and (not isinstance(norm, _BatchNorm) or uses_batch_stats(norm)):
            return None
        # Folded in float64 so that folding adds no rounding beyond the final cast.
        weight = conv.weight.detach().double()
        bias = None if conv.bias is None else conv.bias.detach().double()
        if norm is not None:
            with torch.no_grad():
                scale, shift = folded_batch_norm(copy.deepcopy(norm).double())
            weight = weight * scale.reshape(-1, 1, 1, 1, 1)
            bias = shift if bias is None else bias * scale + shift
        if activation is None and module.with_activation:
            activation = module.activate
        dtype = conv.weight.dtype
        return cls(
            weight.to(dtype).contiguous(),
            None if bias is None else bias.to(dtype),
            conv.stride,
            conv.padding,
            conv.dilation,
            conv.groups,
            activation,
        )

    def extra_repr(self) -> str:
        return (
            f"{self.weight.shape[1] * self.groups}, {self.weight.shape[0]}, kernel_size="
            f"{tuple(self.weight.shape[2:])}, stride={self.stride}, padding={self.padding}, relu={self.relu}"
        )

    def __getstate__(self) -> dict:
        # Packed oneDNN weights are opaque tensors that can be neither copied nor saved; a copy or a
        # loaded module packs its own on first use.
        state = self.__dict__.copy()
        state["_packed"], state["_packed_for"] = {}, None
        return state

    def _uses_onednn(self, x: torch.Tensor, residual: torch.Tensor | None) -> bool:
        return (
            not torch.compiler.is_compiling()  # the compiler packs and fuses on its own
            and x.device.type == "cpu"
            and x.dtype in _onednn_dtypes()
            and x.dtype == self.weight.dtype
            and torch.backends.mkldnn.enabled
            # Autocast does not reach oneDNN's op: F.conv3d under autocast computes what the original does.
            and not autocast_enabled(x.device.type)
            # oneDNN's op has no autograd formula: any input that needs a gradient takes F.conv3d.
            and not (
                torch.is_grad_enabled()
                and (
                    x.requires_grad
                    or self.weight.requires_grad
                    or (self.bias is not None and self.bias.requires_grad)
                    or (residual is not None and residual.requires_grad)
                )
            )
        )

    def _packed_weight(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Size]:
        """oneDNN's packed weight for inputs of ``x``'s shape, and the conv's output shape there."""
        weight = self.weight
        key = (weight.data_ptr(), weight._version, weight.dtype)
        owner = self._packed_for
        if owner is None or owner[0] is not weight or owner[2:] != key:
            self._packed, self._packed_for = {}, (weight, weight.untyped_storage(), *key)
        shape = tuple(x.shape)
        packed = self._packed.get(shape)
        if packed is None:
            # oneDNN reports a mismatch only as "could not create a primitive descriptor".
            if x.dim() != 5 or x.shape[1] != self.weight.shape[1] * self.groups:
                raise ValueError(
                    f"{type(self).__name__} expects a 5-D input with {self.weight.shape[1] * self.groups} "
                    f"channels, got shape {shape}"
                )
            packed = torch.ops.mkldnn._reorder_convolution_weight(
                weight.detach(), *self._onednn_args, list(shape)
            )
            out_shape = torch.Size(
                (shape[0], weight.shape[0])
                + tuple(
                    (size + 2 * p - d * (k - 1) - 1) // s + 1
                    for size, p, d, k, s in zip(
                        shape[2:], self.padding, self.dilation, weight.shape[2:], self.stride, strict=True
                    )
                )
            )
            packed = self._packed[shape] = (packed, out_shape)
        return packed

    def forward(self, x: torch.Tensor, residual: torch.Tensor | None = None) -> torch.Tensor:
        # torch 2.11's oneDNN conv with the residual add fails ("could not create a memory") when the
        # output is one pixel per frame and one frame (T = H = W = 1, e.g. a 32x32 clip's last stage);
        # torch 2.14's does not. Such a conv is tiny: it takes the F.conv3d path on every version.
        # oneDNN's fused add takes a residual of exactly the output's shape only: a larger one is read
        # out of bounds or truncated without an error. Any other residual goes through PyTorch's add,
        # which broadcasts (or raises) as the original block's ``out + identity`` does.
        if self._uses_onednn(x, residual) and (residual is None or residual.shape[2:].numel() > 1):
            weight, out_shape = self._packed_weight(x)
            unary = "relu" if self.relu else None
            if residual is None:
                y = torch.ops.mkldnn._convolution_pointwise(
                    x, weight, self.bias, *self._onednn_args, unary or "none", [], ""
                )
                return y if self.activation is None else self.activation(y)
            if residual.shape == out_shape:
                y = torch.ops.mkldnn._convolution_pointwise.binary(
                    x, residual, weight, self.bias, *self._onednn_args, "add", None, unary, [], None
                )
                return y if self.activation is None else self.activation(y)
        y = F.conv3d(x, self.weight, self.bias, self.stride, self.padding, self.dilation, self.groups)
        if residual is not None:
            # In place only where that is the same as ``y + residual`` (y is this call's own tensor).
            y = y.add_(residual) if residual.shape == y.shape else y + residual
        if self.relu:
            y = y.relu_()
        return y if self.activation is None else self.activation(y)


def _lateral_ids(model: nn.Module) -> set[int]:
    """The laterals of every SlowFast pathway: they run as the fused lateral_concat op, which reads
    the ConvModule's conv and BN itself, so they are not replaced."""
    ids = set()
    for module in model.modules():
        if isinstance(module, ResNet3dPathway):
            for name in ("conv1_lateral", *module.lateral_connections):
                lateral = getattr(module, name, None)
                if lateral is not None:
                    ids.add(id(lateral))
    return ids


def fold_conv_modules(model: nn.Module) -> None:
    """Replace, in place, every foldable Conv3d ConvModule of an eval-mode ``model`` (except the
    SlowFast laterals) by a :class:`FoldedConv3d`, and let each residual block's last conv take the
    shortcut add and the block's ReLU."""
    skip = _lateral_ids(model)
    replaced: dict[int, nn.Module] = {}  # keeps a module shared between parents shared
    for block in list(model.modules()):
        if isinstance(block, _ResidualBlock) and type(block.relu) is nn.ReLU and not block.fused_tail:
            last = getattr(block, block.last_conv_name)
            if isinstance(last, ConvModule) and not last.with_activation:
                folded = FoldedConv3d.from_conv_module(last, activation=block.relu)
                if folded is not None:
                    setattr(block, block.last_conv_name, folded)
                    replaced[id(last)] = folded
                    block.fused_tail = True
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if not isinstance(child, ConvModule) or id(child) in skip:
                continue
            if id(child) not in replaced:
                replaced[id(child)] = FoldedConv3d.from_conv_module(child) or child
            setattr(parent, name, replaced[id(child)])


class OptimizedForInference(nn.Module):
    """The module :func:`optimize_for_inference` returns: ``module`` (the transformed copy) behind
    input checks, the one layout conversion of the input, no-grad execution and, on CUDA, CUDA-graph
    replay. Called like the original: the first argument is the clip ``(N, C, T, H, W)`` or a
    list/tuple of 5-D tensors (the two pathways' inputs ``[x_slow, x_fast]``).

    Outputs of a CUDA-graph replay are copies, so they stay valid after the next call.
    """

    def __init__(self, module: nn.Module, channels_last: bool, cuda_graph: bool | None) -> None:
        super().__init__()
        self.module = module
        self.channels_last = channels_last
        self.cuda_graph = cuda_graph
        self._graphs: dict[tuple, tuple[torch.cuda.CUDAGraph, object, object]] = {}
        self._compiled: Callable | None = None

    def train(self, mode: bool = True) -> OptimizedForInference:
        """Sets this wrapper's flag only: the copy inside stays in eval mode (a training loop's
        ``model.train()`` must not turn its unfolded BatchNorms to batch statistics, nor its dropout
        on: the copy is frozen and computes what ``model.eval()`` does)."""
        super().train(mode)
        self.module.eval()
        return self

    def _check_input(self, x) -> list[torch.Tensor]:
        """The input's tensors, each checked to be one this copy serves."""
        if isinstance(x, torch.Tensor):
            tensors = [x]
        elif isinstance(x, (list, tuple)) and x and all(isinstance(t, torch.Tensor) for t in x):
            tensors = list(x)
        else:
            raise TypeError(
                f"expected the input clip as a tensor (or a list of tensors), got {type(x).__name__}"
            )
        param = next(self.module.parameters(), None)
        for t in tensors:
            if t.dim() != 5:
                raise ValueError(f"expected a 5-D clip (N, C, T, H, W), got shape {tuple(t.shape)}")
            if param is not None and (t.dtype != param.dtype or t.device != param.device):
                raise ValueError(
                    f"this optimized model serves {param.dtype} inputs on {param.device}, got {t.dtype} "
                    f"on {t.device}; convert the input, or optimize a model converted with .to() first"
                )
            if torch.is_grad_enabled() and t.requires_grad:
                raise RuntimeError(
                    "optimize_for_inference models compute no gradients (BN is folded into frozen "
                    "weights); use the original model to train or to differentiate"
                )
        return tensors

    def forward(self, x, *args, **kwargs):
        tensors = self._check_input(x)
        if self.channels_last:
            x = tree_map(lambda t: t.contiguous(memory_format=_CL), x)
        with torch.no_grad():
            if self._compiled is not None:
                return self._compiled(x, *args, **kwargs)
            graphed = tensors[0].is_cuda and self.cuda_graph is not False and not args and not kwargs
            if graphed and not torch.compiler.is_compiling():
                return self._replay(x)
            return self.module(x, *args, **kwargs)

    def _replay(self, x):
        leaves, _ = tree_flatten(x)
        # Autocast changes what the module computes (a graph replays the kernels it captured).
        autocast = torch.is_autocast_enabled("cuda") and torch.get_autocast_dtype("cuda")
        key = (type(x), autocast, *((tuple(t.shape), t.stride(), t.dtype, t.device) for t in leaves))
        if key not in self._graphs:
            self._graphs[key] = self._capture(x)
        graph, static_x, static_out = self._graphs[key]
        for static, t in zip(tree_flatten(static_x)[0], leaves, strict=True):
            static.copy_(t)
        graph.replay()
        return tree_map(lambda t: t.clone() if isinstance(t, torch.Tensor) else t, static_out)

    def _capture(self, x):
        """Capture ``module(x)``; the warm-up runs first on a side stream, outside the capture, so
        cuDNN's benchmark and Triton's autotuner never run inside it."""
        # Normal tensors even when captured under inference mode: later calls outside it copy into them
        # (an inference tensor may be updated in place only inside inference mode).
        with torch.inference_mode(False):
            static_x = tree_map(lambda t: t.clone(memory_format=torch.preserve_format), x)
        device = tree_flatten(x)[0][0].device
        stream = torch.cuda.Stream(device)
        stream.wait_stream(torch.cuda.current_stream(device))
        with torch.cuda.stream(stream):
            for _ in range(3):
                self.module(static_x)
        torch.cuda.current_stream(device).wait_stream(stream)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            static_out = self.module(static_x)
        return graph, static_x, static_out


def optimize_for_inference(
    model: nn.Module,
    example_input: torch.Tensor | list[torch.Tensor] | None = None,
    *,
    channels_last: bool = True,
    cuda_graph: bool | None = None,
    compile: bool | None = None,
) -> OptimizedForInference:
    """A frozen copy of ``model`` for inference that computes the same outputs as ``model.eval()``
    (fp32 within 1e-4 relative), faster. ``model`` is not modified.

    Works on any module containing slowfast_fast backbones (``ResNet3dSlowFast``, ``ResNet3d``, a
    recognizer holding one). Rebuild it after changing the original's weights.

    Args:
        model: the model; its device and dtype are the ones the result serves.
        example_input: a clip to run once now, so that weight packing (CPU) and CUDA-graph capture
            happen here rather than in the first call.
        channels_last: weights and activations in ``torch.channels_last_3d`` (the input is
            converted once on entry; outputs come back in that layout).
        cuda_graph: capture the forward in a CUDA graph per input shape (CUDA only; ``None``: on for
            CUDA inputs). Inputs of a new shape capture a new graph (each keeps its own memory pool).
        compile: run the module through ``torch.compile(fullgraph=True)`` with inductor's freezing
            (which constant-folds the frozen weights and packs them itself), instead of the eager
            oneDNN convs and of our CUDA graphs; ``None`` means off: compiling takes minutes, and on
            CPU it was not faster than the eager optimized copy.

    Raises, when called: ``ValueError`` for an input whose dtype, device or rank the copy cannot
    serve; ``RuntimeError`` for an input that requires grad with gradients enabled.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"optimize_for_inference expects an nn.Module, got {type(model).__name__}")
    # Built outside inference mode even when called inside it: inference tensors as weights would have
    # no version counter, which the packed-weight cache reads (the first call raised).
    with torch.inference_mode(False):
        module = copy.deepcopy(model).eval().requires_grad_(False)
        fold_conv_modules(module)
        if channels_last:
            convert_5d_tensors(module)
    optimized = OptimizedForInference(module, channels_last, cuda_graph)
    if compile:
        optimized._compiled = torch.compile(module, fullgraph=True, options={"freezing": True})
    if example_input is not None:
        optimized(example_input)
    return optimized
