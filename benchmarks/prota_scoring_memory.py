"""ProTA's test-time token-level scoring memory at the MSR-VTT 1k-A shape (itr_video_methods §3.3).

1,000 texts x 1,000 videos x 32 tokens x 12 frames = 384M token pairs: one fp32 intermediate materialised at once is
1.5 GiB, and the scores need several (W2^2, similarities, softmax weights, the kernel Gram). The chunked scorer keeps
each block to ``--block`` token pairs. Prints the growth of the peak resident memory while scoring (the token views are
allocated before the measurement starts), beside the size of one full intermediate.

    python benchmarks/prota_scoring_memory.py --dim 512 --block 16777216
"""

from __future__ import annotations

import argparse
import resource
import time

import torch

from leccr_lightning.methods.prota import ProTAScorer
from leccr_lightning.metrics.ranking import retrieval_report_from_views


def token_views(count: int, tokens: int, dim: int, seed: int) -> dict[str, torch.Tensor]:
    """Unit-mean Gaussian tokens with random lengths (``mean``/``std``/``mask`` views as ProTA encodes them)."""
    generator = torch.Generator().manual_seed(seed)
    mean = torch.nn.functional.normalize(torch.randn(count, tokens, dim, generator=generator), dim=-1)
    mask = torch.arange(tokens)[None] < torch.randint(1, tokens + 1, (count,), generator=generator)[:, None]
    std = 0.1 * torch.rand(count, tokens, dim, generator=generator)
    return {"mean": mean * mask[..., None], "std": std * mask[..., None], "mask": mask.float()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--texts", type=int, default=1000)
    parser.add_argument("--videos", type=int, default=1000)
    parser.add_argument("--tokens", type=int, default=32)
    parser.add_argument("--frames", type=int, default=12)
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--block", type=int, default=2**24)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    queries = token_views(args.texts, args.tokens, args.dim, 0)
    gallery = token_views(args.videos, args.frames, args.dim, 1)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    start = time.perf_counter()
    scorer = ProTAScorer(10.0, (0.5, 1.0, 2.0), 1.0, args.block)
    retrieval_report_from_views(queries, gallery, torch.arange(args.texts) % args.videos, scorer)
    seconds = time.perf_counter() - start
    growth = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) * 1024
    full = args.texts * args.videos * args.tokens * args.frames * 4
    print(
        f"{args.texts} x {args.videos} x {args.tokens} x {args.frames}, d={args.dim}, block={args.block}: peak RSS "
        f"growth {growth / 2**20:.0f} MiB; one full fp32 intermediate {full / 2**20:.0f} MiB "
        f"(ratio {growth / full:.3f}); {seconds:.1f} s"
    )


if __name__ == "__main__":
    main()
