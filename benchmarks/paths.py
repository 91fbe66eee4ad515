"""Where the benchmark scripts find the checkout, the shared data beside it, their results and their scratch folders,
and how they write and show their results."""
import json
import os
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data"  # the data sets live beside the checkout, never in it (see DATA / "README.md")
RESULTS = REPO / "benchmarks" / "results"  # what benchmarks/README.md reports: committed
OUTPUTS = REPO / "outputs"  # run folders, caches and logs: ignored by git
RECIPES = REPO / "recipes"

# A script also runs from a checkout where the project is not installed: the library and the recipes import from REPO.
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))


def write_results(path: Path, results: dict) -> None:
    """`results` as JSON at `path`, written whole or not at all: a kill never leaves a half-written results file (the
    temporary name carries the process id, so two scripts side by side never share one)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps(results, indent=1, sort_keys=True) + "\n")
    os.replace(tmp, path)


def print_headline(results: dict) -> None:
    """One line per headline figure: id, value ± spread, unit and the reference it is read against."""
    for figure in results["headline"]:
        value = "not measured" if figure["value"] is None else f"{figure['value']:.3f}"
        spread = f" ± {figure['spread']:.3f}" if figure.get("spread") is not None else ""
        print(f"{figure['id']}: {value}{spread} {figure['unit']} (reference {figure['reference']:.3g})")


def run_jobs(jobs: dict, workers: int, record) -> None:
    """Each job (key -> a call returning its result) on a pool of `workers` threads, each result passed to
    `record(key, result)` as it finishes. A job that raises RuntimeError (a failed run) is printed and not recorded, so
    the next call of the script runs it again."""
    import time
    from concurrent.futures import ThreadPoolExecutor, as_completed

    with ThreadPoolExecutor(max_workers=workers) as pool:
        futures = {pool.submit(call): key for key, call in jobs.items()}
        for future in as_completed(futures):
            key = futures[future]
            try:
                result = future.result()
            except RuntimeError as error:
                print(f"{time.strftime('%H:%M:%S')} {key}: {error}", flush=True)
                continue
            print(f"{time.strftime('%H:%M:%S')} {key}: {result}", flush=True)
            record(key, result)
