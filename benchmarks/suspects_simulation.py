"""Does the suspect score find a mislabelled transcript? Simulated on a finished run's cross-validated transcripts.

    python benchmarks/suspects_simulation.py --project DIR [--trials 50] [--seed 0]

DIR is a finished run (`make demo`: results/metrics/<method>/fold<k>/hypotheses.csv for the methods and folds of its
params.yaml). Each trial replaces one utterance's reference by another utterance's sentence, as a mislabelled file
would be, and recomputes that utterance's CER for every method from the transcripts the models wrote (what they
heard stays the same), then ranks every utterance as the analyze stage does (asrflow.analyze.suspects_table). It
prints how often the corrupted utterance ranks first, ranks in the top 5 and is flagged (score above SUSPECT_Z), and
the highest score of the unchanged run (a false alarm if above SUSPECT_Z). docs/analysis.md quotes it on the demo.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import jiwer
import numpy as np
import pandas as pd

from asrflow.analyze import SUSPECT_Z, suspects_table
from asrflow.config import load_all
from asrflow.results import load_hypotheses


def corrupted_rank(hypotheses: pd.DataFrame, methods: list[str], target: str, sentence: str) -> tuple[int, bool]:
    """(rank, flagged) of `target` once its reference is `sentence`."""
    changed = hypotheses.copy()
    rows = changed["utt_id"] == target
    changed.loc[rows, "reference"] = sentence
    changed.loc[rows, "cer"] = [jiwer.cer(sentence, h) for h in changed.loc[rows, "hypothesis"]]
    table = suspects_table(changed, methods, {u: u for u in changed["utt_id"]}, no_drops())
    found = table[table["utt_id"] == target].iloc[0]
    return int(found["rank"]), found["reason"] != ""


def no_drops() -> pd.DataFrame:
    return pd.DataFrame(columns=["utt_id", "dropped_by", "dropped"], dtype=str)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--project", required=True, type=Path)
    parser.add_argument("--trials", type=int, default=50)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    params = load_all(args.project / "params.yaml")
    methods = params["methods"]
    hypotheses = load_hypotheses(args.project / "results/metrics", methods, params["folds"]["k"])
    clean = suspects_table(hypotheses, methods, {u: u for u in hypotheses["utt_id"]}, no_drops())
    print(f"unchanged: highest score {clean['score'].max():.2f} (flagged above {SUSPECT_Z})")
    rng = np.random.default_rng(args.seed)
    utterances = sorted(set(hypotheses["utt_id"]))
    results = []
    for _ in range(args.trials):
        target, donor = rng.choice(utterances, 2, replace=False)
        sentence = hypotheses.loc[hypotheses["utt_id"] == donor, "reference"].iloc[0]
        results.append(corrupted_rank(hypotheses, methods, target, sentence))
    ranks = np.array([rank for rank, _ in results])
    print(
        f"{args.trials} trials: ranked first {int((ranks == 1).sum())}, top 5 {int((ranks <= 5).sum())}, "
        f"flagged {sum(flagged for _, flagged in results)}; worst rank {ranks.max()} of {len(utterances)}"
    )


if __name__ == "__main__":
    main()
