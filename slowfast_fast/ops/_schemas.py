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
