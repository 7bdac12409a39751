"""The node's ratio to the better peer round by round, for the benchmarks' summaries
(bench/http/run.sh, bench/h2/run.sh): the runs of one round follow each other within
seconds, so this shows how far the machine's noise moves a row next to its median."""

import statistics


def round_ratios_line(mine, theirs, best):
    """`mine`, `theirs`: {round: req/s}. The line to print under the node's row, or None."""
    ratios = sorted(mine[r] / theirs[r] for r in mine if r in theirs and theirs[r] > 0)
    if not ratios:
        return None
    return (f"{'':>7} {'':>5} {'':>10} per round vs {best}: "
            + " ".join(f"{x:.2f}" for x in ratios)
            + f" (median {statistics.median(ratios):.2f})")
