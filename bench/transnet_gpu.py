"""TransNetV2 throughput on the available devices (CPU always; CUDA when present), per precision.

    python bench/transnet_gpu.py [--frames 6000] [--cpu-frames 600] [--precisions fp32,bf16]
                                 [--json bench/results/transnet_gpu.json]

Times ``TransNet.predict`` over every frame (the 'transnetv2-full' detector's model cost, decode
excluded) on random 48x27 frames, after a warm-up, on each device at each precision (bf16:
``torch.autocast``; on a CPU without native bf16 it is emulated and slow). Prints frames/s per
(device, precision) and CUDA / CPU **at the same precision** only, with the CPU's thread count,
so no ratio compares bf16 on one device with fp32 on the other.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench import record as bench_record  # noqa: E402  (after the path insert)


def main() -> None:
    import torch

    from pipelines.transnet import TransNet

    ap = argparse.ArgumentParser()
    ap.add_argument("--frames", type=int, default=6000, help="frames timed on CUDA")
    ap.add_argument("--cpu-frames", type=int, default=600, help="frames timed on the CPU")
    ap.add_argument("--precisions", default="fp32,bf16")
    ap.add_argument("--json", help="write the results here (bench/results/...)")
    args = ap.parse_args()
    precisions = [p for p in args.precisions.split(",") if p]
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    record = bench_record.provenance("python bench/transnet_gpu.py", None,
                                     {f"{d}:{p}": p for d in devices for p in precisions},
                                     {"cpu": torch.get_num_threads()})
    rng = np.random.default_rng(0)
    fps: dict[str, float] = {}
    for dev in devices:
        n = args.cpu_frames if dev == "cpu" else args.frames
        frames = rng.integers(0, 255, (n, 27, 48, 3), dtype=np.uint8)
        for prec in precisions:
            model = TransNet(device=dev, precision=prec)
            model.predict(frames[:200])
            if dev == "cuda":
                torch.cuda.synchronize()
            t = time.perf_counter()
            model.predict(frames)
            if dev == "cuda":
                torch.cuda.synchronize()
            fps[f"{dev}:{prec}"] = round(n / (time.perf_counter() - t), 1)
    result = {"fps": fps, "frames": {"cpu": args.cpu_frames, "cuda": args.frames if "cuda" in devices else 0}}
    if "cuda" in devices:
        result["cuda_over_cpu_same_precision"] = {p: round(fps[f"cuda:{p}"] / fps[f"cpu:{p}"], 1)
                                                  for p in precisions}
    print(json.dumps({**result, "gpu": record["machine"]["gpu"], "cpu_threads": torch.get_num_threads()},
                     indent=1))
    if args.json:
        bench_record.write_result(args.json, record, result)


if __name__ == "__main__":
    main()
