"""The ablation experiment behind ``flexframe ablate``: its settings and its training loop.

Example:
    >>> from flexframe.experiment import AblationConfig, ABLATION_CONFIGURATIONS
    >>> AblationConfig().steps, len(ABLATION_CONFIGURATIONS)
    (150, 4)
"""

from flexframe.experiment.ablation import (
    ABLATION_CONFIGURATIONS,
    AblationConfiguration,
    AblationData,
    AblationResult,
    FrameEncoder,
    RunStopped,
    TrainStep,
    build_models,
    leak_free,
    load_ablation_data,
    mask_label,
    run_ablation,
)
from flexframe.experiment.config import AblationConfig, load_ablation_config

__all__ = [
    "ABLATION_CONFIGURATIONS",
    "AblationConfig",
    "AblationConfiguration",
    "AblationData",
    "AblationResult",
    "FrameEncoder",
    "RunStopped",
    "TrainStep",
    "build_models",
    "leak_free",
    "load_ablation_config",
    "load_ablation_data",
    "run_ablation",
    "mask_label",
]
