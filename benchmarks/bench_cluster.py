"""Benchmark tile-and-predict on dask.distributed (smallseg.cluster) against one process, on this machine.

Three measurements, each printing Markdown and writing JSON into ``--work``:

``throughput``: N synthetic scenes (``write_remote_sensing_scene``, seed 21 + i) predicted four ways, each in a
fresh process: one process without Dask on 1 torch thread; ``local:1`` (one one-thread worker); ``local:2``
(two); one process without Dask on 2 torch threads (the same total threads as ``local:2``). Wall time of the
job (cluster start-up reported apart), scenes per hour, and whether every output is byte-identical to the
1-thread single process.

``split``: one big scene split into bands across ``local:N`` workers (``--split-scene``), wall time, peak
resident memory (``ru_maxrss``) of each worker and of the client (the merge), the merge's own stage times
from ``run.json``; with ``--compare`` also the single-process run and the byte comparison.

``overheads``: per-task scheduling cost (no-op tasks through ``local:2``), model load per worker (first
task's load, from :data:`smallseg.cluster.worker.LOAD_SECONDS`), and the merge's share (from ``split``'s
JSON, when present).

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_cluster.py throughput --scenes 8 --size 2048 --work /tmp/bench_cluster
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_cluster.py split --size 4096 --compare --work /tmp/bench_cluster
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_cluster.py split --size 16384 --height 2048 --split 6 --work /tmp/bench_cluster
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_cluster.py overheads --work /tmp/bench_cluster
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
ROOT = Path(__file__).resolve().parents[1]
OUTPUTS = ("instances.tif", "classes.tif", "gpkg", "geojson", "objects.csv", "quicklook.png")


def make_scenes(work: Path, n: int, size: int, seed0: int = 21, height: int | None = None) -> list[Path]:
    """Scenes ``scene000..`` of ``height`` (default ``size``) x ``size`` px, cached in ``work`` (the first k of
    a folder are the same files whatever n)."""
    from smallseg.data.remote_sensing import write_remote_sensing_scene

    height = height or size
    folder = work / f"scenes_{height}x{size}_seed{seed0}"
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        stem = folder / f"scene{i:03d}"
        image = Path(f"{stem}_image.tif")
        if not image.exists():
            write_remote_sensing_scene(stem, height, size, seed=seed0 + i, pixel_size_m=0.4)
            for extra in ("_instances.tif", "_classes.tif", "_objects.csv"):  # ground truth: not inputs here
                Path(f"{stem}{extra}").unlink(missing_ok=True)
        paths.append(image)
    return paths


# ------------------------------------------------------------------------------------------------- one run

_RUN = r"""
import json, os, resource, sys, time
t0 = time.perf_counter()
import torch
torch.set_num_threads(int(sys.argv[5]))
from smallseg.pipeline.geotiff import GeoTiffOptions, predict_geotiffs
inputs, out, cluster, split = json.loads(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
options = GeoTiffOptions(progress=False, device="cpu", overwrite=True)
stats = {}
if cluster == "none":
    t = time.perf_counter()
    batch = predict_geotiffs(inputs, out, model="remote-sensing", options=options)
    stats["job_s"] = time.perf_counter() - t
else:
    from smallseg.cluster.client import cluster_client
    from smallseg.cluster.worker import load_seconds
    t = time.perf_counter()
    with cluster_client(cluster, torch_threads=int(sys.argv[5])) as client:  # threads per worker
        client.wait_for_workers(int(cluster.split(":")[1]))
        stats["cluster_start_s"] = time.perf_counter() - t
        t = time.perf_counter()
        batch = predict_geotiffs(inputs, out, model="remote-sensing", options=options, client=client,
                                 split_rows=split if split in ("auto",) else int(split))
        stats["job_s"] = time.perf_counter() - t
        stats["worker_peak_rss_mb"] = sorted(v / 1024 for v in client.run(
            lambda: __import__("resource").getrusage(__import__("resource").RUSAGE_SELF).ru_maxrss).values())
        stats["worker_model_load_s"] = [x for v in client.run(load_seconds).values() for x in v]
        stats["worker_cpu_s"] = sorted(client.run(
            lambda: sum(__import__("resource").getrusage(__import__("resource").RUSAGE_SELF)[:2])).values())
stats["client_peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
stats["client_cpu_s"] = sum(resource.getrusage(resource.RUSAGE_SELF)[:2])
stats["objects"] = sum(r.n_objects for r in batch.results)
stats["failures"] = [f.message for f in batch.failures]
stats["timings"] = [r.run.get("timings_s", {}) for r in batch.results]
print("STATS " + json.dumps(stats))
"""


def run_once(inputs: list[Path], out: Path, cluster: str, split: str, threads: int) -> dict:
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), GDAL_CACHEMAX="64", NO_ALBUMENTATIONS_UPDATE="1")
    t = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", _RUN, json.dumps([str(p) for p in inputs]), str(out), cluster,
                           split, str(threads)], cwd=ROOT, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t
    line = [l for l in proc.stdout.splitlines() if l.startswith("STATS ")]
    if proc.returncode != 0 or not line:
        raise SystemExit(f"{cluster}: failed ({proc.returncode}): {proc.stderr[-3000:]}")
    stats = json.loads(line[0][6:])
    stats["process_wall_s"] = wall
    return stats


def digests(out: Path, stems: list[str]) -> dict:
    return {f"{s}.{k}": hashlib.sha256((out / f"{s}.{k}").read_bytes()).hexdigest() for s in stems for k in OUTPUTS}


def load_avg() -> str:
    return " / ".join(f"{v:.1f}" for v in os.getloadavg())


# ----------------------------------------------------------------------------------------------- commands


def cmd_throughput(args) -> dict:
    work = Path(args.work)
    inputs = make_scenes(work, args.scenes, args.size)
    stems = [p.stem for p in inputs]
    modes = [("one process, 1 thread (no Dask)", "none", 1), ("local:1 (1 worker x 1 thread)", "local:1", 1),
             ("local:2 (2 workers x 1 thread)", "local:2", 1), ("one process, 2 threads (no Dask)", "none", 2)]
    if args.modes:
        modes = [modes[int(i)] for i in args.modes.split(",")]
    rows, ref = [], None
    print(f"load average before: {load_avg()}")
    for name, cluster, threads in modes:
        out = work / f"out_{cluster.replace(':', '')}_{threads}t"
        stats = run_once(inputs, out, cluster, "0", threads)
        d = digests(out, stems)
        ref_out = work / "out_none_1t"  # the 1-thread single process (the first mode; or an earlier run's)
        ref = ref or (digests(ref_out, stems) if ref_out.exists() else d)
        stats.update(name=name, same_bytes=d == ref, load=load_avg(),
                     scenes_per_hour=3600 * len(inputs) / stats["job_s"])
        rows.append(stats)
        print(f"{name}: job {stats['job_s']:.1f} s, {stats['scenes_per_hour']:.0f} scenes/h, same bytes "
              f"{stats['same_bytes']}, load {stats['load']}", flush=True)
    base = next((r for r in rows if r["name"].startswith("local:1")), rows[0])
    print(f"\n{len(inputs)} scenes of {args.size}² px, shipped remote-sensing model, all outputs\n")
    print("| run | cluster start s | job s | scenes / h | vs local:1 | same bytes as 1-thread process | load avg after |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for r in rows:
        start = f"{r['cluster_start_s']:.1f}" if "cluster_start_s" in r else "-"
        print(f"| {r['name']} | {start} | {r['job_s']:.1f} | {r['scenes_per_hour']:.0f} | "
              f"{r['scenes_per_hour'] / base['scenes_per_hour']:.2f} | {r['same_bytes']} | {r['load']} |")
    return {"scenes": len(inputs), "size": args.size, "rows": rows}


def cmd_split(args) -> dict:
    work = Path(args.work)
    (scene,) = make_scenes(work, 1, args.size, seed0=11, height=args.height)
    result = {"size": args.size, "height": args.height or args.size, "split": args.split}
    print(f"load average before: {load_avg()}", flush=True)
    out = work / f"split_{args.height or args.size}x{args.size}_{args.cluster.replace(':', '')}"
    stats = run_once([scene], out, args.cluster, args.split, 1)
    result["split"] = stats
    t = stats["timings"][0]
    print(f"split on {args.cluster} (--split-scene {args.split}): job {stats['job_s']:.1f} s (cluster start "
          f"{stats['cluster_start_s']:.1f} s), objects {stats['objects']}, worker peak RSS "
          f"{[round(v) for v in stats['worker_peak_rss_mb']]} MB, client peak RSS {stats['client_peak_rss_mb']:.0f} MB, "
          f"load {load_avg()}")
    print("client stages (s): " + ", ".join(f"{k} {v:.1f}" for k, v in t.items()))
    print(f"CPU seconds: client {stats['client_cpu_s']:.0f}, workers {[round(v) for v in stats.get('worker_cpu_s', [])]}")
    if args.compare:
        ref_out = work / f"split_{args.height or args.size}x{args.size}_single"
        single = run_once([scene], ref_out, "none", "0", 1)
        same = digests(out, [scene.stem]) == digests(ref_out, [scene.stem])
        result.update(single=single, same_bytes=same)
        print(f"one process, 1 thread: job {single['job_s']:.1f} s, peak RSS {single['client_peak_rss_mb']:.0f} MB; "
              f"split outputs byte-identical: {same}")
    return result


def _noop(x):
    return x


def cmd_overheads(args) -> dict:
    from smallseg.cluster.client import cluster_client

    res = {}
    with cluster_client("local:2") as client:
        client.wait_for_workers(2)
        for n in (50, 500):
            t = time.perf_counter()
            futures = [client.submit(_noop, i, pure=False) for i in range(n)]
            client.gather(futures)
            res[f"noop_{n}_s"] = time.perf_counter() - t
        t = time.perf_counter()
        for i in range(50):  # one at a time: the latency of one task round trip
            client.submit(_noop, i, pure=False).result()
        res["roundtrip_ms"] = (time.perf_counter() - t) / 50 * 1000
    res["per_task_ms"] = res["noop_500_s"] / 500 * 1000
    print(f"no-op tasks through local:2: {res['per_task_ms']:.2f} ms per task in a batch of 500, "
          f"{res['roundtrip_ms']:.1f} ms per sequential round trip")
    return res


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("throughput")
    p.add_argument("--scenes", type=int, default=8)
    p.add_argument("--size", type=int, default=2048)
    p.add_argument("--modes", default=None, help="comma list of mode numbers 0-3 (default: all)")
    p = sub.add_parser("split")
    p.add_argument("--size", type=int, default=4096)
    p.add_argument("--height", type=int, default=None, help="scene rows (default: --size, a square)")
    p.add_argument("--cluster", default="local:2")
    p.add_argument("--split", default="auto")
    p.add_argument("--compare", action="store_true")
    sub.add_parser("overheads")
    for p in sub.choices.values():
        p.add_argument("--work", default="/tmp/bench_cluster")
    args = parser.parse_args()
    Path(args.work).mkdir(parents=True, exist_ok=True)
    result = {"throughput": cmd_throughput, "split": cmd_split, "overheads": cmd_overheads}[args.cmd](args)
    tag = args.cmd + (f"_{getattr(args, 'height', None) or args.size}x{args.size}" if hasattr(args, "size") else "")
    tag += f"_{args.scenes}" if hasattr(args, "scenes") else ""
    (Path(args.work) / f"{tag}.json").write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
