"""TransNetV2 throughput on the available devices (CPU always; CUDA when present).

    python bench/transnet_gpu.py [--frames 6000]

Times ``TransNet.predict`` over every frame (the 'transnetv2-full' detector's model
cost, decode excluded) on random 48x27 frames, after a warm-up. Prints frames/s per
device and the ratio to the CPU figure measured in the same process.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np


def main() -> None:
    import torch

    from pipelines.transnet import TransNet

    ap = argparse.ArgumentParser()
    ap.add_argument("--frames", type=int, default=6000)
    ap.add_argument("--cpu-frames", type=int, default=600)
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    results = {}
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    for dev in devices:
        n = args.cpu_frames if dev == "cpu" else args.frames
        frames = rng.integers(0, 255, (n, 27, 48, 3), dtype=np.uint8)
        model = TransNet(device=dev)
        model.predict(frames[:200])
        if dev == "cuda":
            torch.cuda.synchronize()
        t = time.perf_counter()
        model.predict(frames)
        if dev == "cuda":
            torch.cuda.synchronize()
        results[dev] = n / (time.perf_counter() - t)
    if "cuda" in results:
        results["cuda_over_cpu"] = results["cuda"] / results["cpu"]
        results["gpu"] = torch.cuda.get_device_name(0)
    results["cpu_threads"] = torch.get_num_threads()
    print(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
