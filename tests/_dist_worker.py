"""Run by ``torchrun`` from tests/test_distributed.py: train, then rank 0 saves the results.

python -m torch.distributed.run --nproc_per_node 2 tests/_dist_worker.py CONFIG.json OUT.pt
"""

import json
import os
import sys

import torch
import torch.distributed as dist

from flexframe.distributed import exit_process, shutdown_distributed
from flexframe.experiment import ABLATION_CONFIGURATIONS, AblationConfig, run_ablation
from flexframe.experiment.ablation import RunStopped


def main(config_path: str, out_path: str) -> None:
    settings = json.loads(open(config_path).read())
    names = settings.pop("_configurations")
    config = AblationConfig.from_dict(settings)
    configurations = [c for c in ABLATION_CONFIGURATIONS if c.name in names]
    try:
        result = run_ablation(
            config, configurations=configurations, keep_state=True, progress=False,
            log=lambda message: None,
        )  # fmt: skip
    except RunStopped:
        shutdown_distributed()
        return
    # Which clips each rank trained on, gathered to rank 0.
    seen = [None] * dist.get_world_size()
    dist.all_gather_object(seen, [r["_rows_seen"] for r in result.runs])
    shutdown_distributed()
    if int(os.environ.get("RANK", "0")) == 0:
        torch.save(
            {r["configuration"]: {"state": r["_state"], "losses": r["loss_curve"],
                                  "world_size": r["world_size"], "parallel": r["parallel"],
                                  "resumed_from_step": r["resumed_from_step"],
                                  "rows_seen_by_rank": [ranks[i] for ranks in seen],
                                  "global_batches": r["_order"]}
             for i, r in enumerate(result.runs)},
            out_path,
        )  # fmt: skip


if __name__ == "__main__":
    main(*sys.argv[1:])
    exit_process(0)  # gloo can abort a finished CPU worker during interpreter teardown
