"""Run under torchrun by test_distributed.py: the same recipe trained with DDP, then with FSDP, in one launch
(one process group, so the runs share the processes' start-up); then the FSDP run resumed from its checkpoint
for one more epoch (into OUT_FSDP-resumed), which loads the full optimizer state back into the shards.
Arguments: RECIPE OUT_DDP OUT_FSDP."""
import os
import sys

import torch.distributed as dist

from zoo.engine.cli import train_main

if __name__ == "__main__":
    recipe, out_ddp, out_fsdp = sys.argv[1:4]
    dist.init_process_group("gloo")
    assert dist.get_world_size() == int(os.environ["WORLD_SIZE"]) == 2
    common = ["--config", recipe, "--no-progress", "--set", "data.batch_size=8"]
    codes = [train_main([*common, "--output", out_ddp]),
             train_main([*common, "--output", out_fsdp, "--set", "train.parallel=fsdp"])]
    codes.append(train_main(["--resume", f"{out_fsdp}/checkpoint-last.pth", "--output", f"{out_fsdp}-resumed",
                             "--set", "train.epochs=3", "--no-progress"]))
    dist.destroy_process_group()
    sys.exit(max(codes))
