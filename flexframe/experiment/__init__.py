"""The ablation experiment behind ``flexframe ablate``, one module per concern.

- :mod:`~flexframe.experiment.config`: the settings (:class:`AblationConfig`);
- :mod:`~flexframe.experiment.data`: the clips (moving digits or video files);
- :mod:`~flexframe.experiment.configurations`: the table's rows and the leak check;
- :mod:`~flexframe.experiment.models`: the stand-in LLM, the reconstruction module, one step;
- :mod:`~flexframe.experiment.objective`: what a run predicts (the change from each frame),
  its loss, and how it is scored;
- :mod:`~flexframe.experiment.prepare`: every setup check, once, before any training;
- :mod:`~flexframe.experiment.train`: the training loop;
- :mod:`~flexframe.experiment.checkpoint`: resumable runs;
- :mod:`~flexframe.experiment.results`: the results and the paired comparisons;
- :mod:`~flexframe.experiment.stats`: the t-interval and the verdict;
- :mod:`~flexframe.experiment.report`: the Markdown tables and the figure.

Example:
    >>> from flexframe.experiment import AblationConfig, ABLATION_CONFIGURATIONS
    >>> AblationConfig().steps, len(ABLATION_CONFIGURATIONS)
    (150, 4)
"""

from flexframe.experiment.config import AblationConfig, load_ablation_config
from flexframe.experiment.configurations import (
    ABLATION_CONFIGURATIONS,
    AblationConfiguration,
    leak_free,
    mask_label,
)
from flexframe.experiment.data import AblationData, load_ablation_data
from flexframe.experiment.models import FrameEncoder, TrainStep, build_models
from flexframe.experiment.prepare import AblationSetup, prepare_ablation
from flexframe.experiment.results import AblationResult, RunResult
from flexframe.experiment.train import AblationInterrupted, RunStopped, run_ablation, train_run

__all__ = [
    "ABLATION_CONFIGURATIONS",
    "AblationConfig",
    "AblationConfiguration",
    "AblationData",
    "AblationInterrupted",
    "AblationResult",
    "AblationSetup",
    "FrameEncoder",
    "RunResult",
    "RunStopped",
    "TrainStep",
    "build_models",
    "leak_free",
    "load_ablation_config",
    "load_ablation_data",
    "mask_label",
    "prepare_ablation",
    "run_ablation",
    "train_run",
]
