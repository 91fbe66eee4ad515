"""Where the benchmark scripts find the checkout, the shared data beside it, their results and their scratch folders."""
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
