"""Op schemas, shared by the compiled library (csrc/ops.cpp declares the same strings; a test
checks they agree) and the Triton backend's Python-defined namespace.

The two lateral_concat gradient ops take ``out`` (the forward's output) only when the forward
applied ReLU: its lateral channels give the ReLU mask. ``grad_weight`` returns
``(grad_weight, grad_scale, grad_shift)``; the last two are computed from the same reduction
(see ``slowfast_fast/ops/lateral_concat.py``) and are ignored when unused.
"""

SCHEMAS = {
    "lateral_concat": (
        "lateral_concat(Tensor x_slow, Tensor x_fast, Tensor weight, int stride, int padding, "
        "Tensor? scale, Tensor? shift, bool relu) -> Tensor"
    ),
    "lateral_concat_grad_input": (
        "lateral_concat_grad_input(Tensor grad_out, Tensor x_fast, Tensor weight, Tensor? scale, "
        "Tensor? out, int stride, int padding) -> Tensor"
    ),
    "lateral_concat_grad_weight": (
        "lateral_concat_grad_weight(Tensor grad_out, Tensor x_fast, Tensor weight, Tensor? scale, "
        "Tensor? out, int stride, int padding) -> (Tensor, Tensor, Tensor)"
    ),
    "temporal_resample": "temporal_resample(Tensor x, float scale_factor) -> Tensor",
    "temporal_resample_backward": (
        "temporal_resample_backward(Tensor grad_out, int t_in, float scale_factor) -> Tensor"
    ),
    "pathway_split": ("pathway_split(Tensor x, float slow_scale, float fast_scale) -> (Tensor, Tensor)"),
}

# Ops only the Triton namespace has. ``lateral_concat_backward`` gives both gradients of
# ``lateral_concat`` in one call (``(grad_x_fast, grad_weight, grad_scale, grad_shift)``; one not asked
# for by ``need_input`` / ``need_weight`` is a 0-element tensor), so that its kernels can share
# launches; the autograd formula uses it where the namespace has it.
TRITON_SCHEMAS = {
    "lateral_concat_backward": (
        "lateral_concat_backward(Tensor grad_out, Tensor x_fast, Tensor weight, Tensor? scale, "
        "Tensor? out, int stride, int padding, bool need_input, bool need_weight) "
        "-> (Tensor, Tensor, Tensor, Tensor)"
    ),
}
