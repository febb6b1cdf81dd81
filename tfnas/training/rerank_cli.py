"""The `tfnas rerank` command: train a search's best architectures longer and reorder them
(`tfnas.training.rerank`; Nekrasov et al., CVPR 2019, Sec. 4.2).

    tfnas rerank runs/voc                      # the space's top K (10 for auxcell), 50 epochs each
    tfnas rerank runs/voc --top 5 --epochs 20
    tfnas rerank runs/voc                      # again after a kill: finished ones are kept
    tfnas train runs/voc --trial reranked      # then train the winner fully
"""


def register(subparsers):
    """Adds the `rerank` subcommand to a `tfnas` argparse parser.

    Args:
        subparsers: the object returned by `parser.add_subparsers()`.

    Returns:
        the subcommand's `ArgumentParser` (its `func` is `run_rerank`).
    """
    from tfnas.cli.options import positive_int

    parser = subparsers.add_parser(
        "rerank",
        help="train the best architectures of a search longer and reorder them",
        description="Train the K best completed architectures of a search longer, each from its "
        "proxy-trained weights, on the search's data with its task's recipe stretched to "
        "--epochs, and order them by that longer training (Nekrasov et al., CVPR 2019, Sec. 4.2: "
        "the 10 best for 20 + 30 epochs; Chen et al., NeurIPS 2018: the top 50). Writes "
        "RUN_DIR/rerank.json and RUN_DIR/rerank/; run it again to resume.",
    )
    parser.add_argument("run_dir", metavar="RUN_DIR", help="search directory (tfnas search --out)")
    parser.add_argument(
        "--top",
        type=positive_int,
        default=None,
        help="architectures to rerank (default: the earlier rerank's, else the space's: 10 for "
        "auxcell and template, 50 for dpc)",
    )
    parser.add_argument(
        "--epochs",
        type=positive_int,
        default=None,
        help="epochs of each architecture (default: the earlier rerank's, else 50)",
    )
    parser.add_argument(
        "--batch-size",
        type=positive_int,
        default=None,
        help="batch size (default: the recipe's: 64 for segmentation, 32 depth, 128 pose)",
    )
    parser.add_argument(
        "--include-terminated",
        action="store_true",
        help="also rerank trials stopped by progressive termination after stage 1",
    )
    parser.add_argument(
        "--json", action="store_true", help="print the reranked architectures as JSON (progress on stderr)"
    )
    parser.add_argument(
        "--verbose",
        type=int,
        choices=(0, 1, 2),
        default=1,
        help="0: silent, 1: a line per architecture, 2: and per epoch (default: 1)",
    )
    parser.set_defaults(func=run_rerank)
    return parser


def run_rerank(args):
    """Handler of `tfnas rerank` (see the module docstring); returns the exit status.

    Raises:
        UsageError: for a folder that holds no search (reported by `tfnas.cli.main`).
    """
    import sys

    from tfnas.report.table import json_table
    from tfnas.training.rerank import rerank, rerank_table
    from tfnas.training.train_cli import _source

    source = _source(args.run_dir)
    rows = rerank(
        source.path,
        top=args.top,
        epochs=args.epochs,
        batch_size=args.batch_size,
        include_terminated=args.include_terminated,
        verbose=min(args.verbose, 1) if args.json else args.verbose,
        stream=sys.stderr if args.json else sys.stdout,
    )
    if args.json:
        print(json_table(rows))
        return 0
    print()
    print(f"{len(rows)} architecture(s) of {source.path}, best rerank reward first:")
    print(rerank_table(rows))
    if rows and rows[0]["status"] == "COMPLETED":
        print(f"\nnext: tfnas train {source.path} --trial reranked   (trial {rows[0]['trial_id']}, fully)")
    return 0
