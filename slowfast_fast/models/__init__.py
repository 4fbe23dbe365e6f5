"""Drop-in SlowFast backbones: mmaction2 1.x's ResNet3d, ResNet3dPathway and ResNet3dSlowFast in plain
PyTorch (same arguments, module names, state_dict keys and outputs; no mmcv/mmengine needed), with
the pathway split and lateral connections running as the fused ops of :mod:`slowfast_fast.ops`.

To use the backbone from an mmaction2 config, import :mod:`slowfast_fast.models.mmaction`, which
registers it as ``FastResNet3dSlowFast``; importing this package does not import mmaction2.
"""

from slowfast_fast.models.checkpoint import load_mmaction_checkpoint
from slowfast_fast.models.convert import from_pyslowfast, from_pytorchvideo
from slowfast_fast.models.optimize import optimize_for_inference
from slowfast_fast.models.recognizer import SlowFastHead, SlowFastRecognizer
from slowfast_fast.models.resnet3d import ResNet3d
from slowfast_fast.models.resnet3d_slowfast import ResNet3dPathway, ResNet3dSlowFast
from slowfast_fast.models.training import to_channels_last_3d

__all__ = [
    "ResNet3d",
    "ResNet3dPathway",
    "ResNet3dSlowFast",
    "SlowFastHead",
    "SlowFastRecognizer",
    "from_pyslowfast",
    "from_pytorchvideo",
    "load_mmaction_checkpoint",
    "optimize_for_inference",
    "to_channels_last_3d",
]
