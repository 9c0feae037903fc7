"""Run by ``torchrun`` from tests/test_distributed.py: train, then rank 0 saves the results.

python -m torch.distributed.run --nproc_per_node 2 tests/_dist_worker.py CONFIG.json OUT.pt

Each configuration is trained with the public ``train_run``; its final parameters are gathered
whole (``get_model_state_dict(full_state_dict=True)``) and saved with the run's results.
"""

import json
import os
import sys

import torch
from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

from flexframe.distributed import exit_process, init_distributed, shutdown_distributed
from flexframe.experiment import (
    ABLATION_CONFIGURATIONS,
    AblationConfig,
    RunStopped,
    prepare_ablation,
    train_run,
)


def main(config_path: str, out_path: str) -> None:
    settings = json.loads(open(config_path).read())
    names = settings.pop("_configurations")
    config = AblationConfig.from_dict(settings)
    configurations = [c for c in ABLATION_CONFIGURATIONS if c.name in names]
    setup = prepare_ablation(config, configurations=configurations, log=lambda message: None)
    env = init_distributed("cpu")
    results = {}
    options = StateDictOptions(full_state_dict=True, cpu_offload=True)
    try:
        for configuration in configurations:
            run, step = train_run(setup, configuration, config.seeds[0], env)
            state = get_model_state_dict(step, options=options)  # a collective under FSDP
            results[run.configuration] = {"state": state, "run": run.to_dict()}
    except RunStopped:
        shutdown_distributed()
        return
    shutdown_distributed()
    if int(os.environ.get("RANK", "0")) == 0:
        torch.save(results, out_path)


if __name__ == "__main__":
    main(*sys.argv[1:])
    exit_process(0)  # gloo can abort a finished CPU worker during interpreter teardown
