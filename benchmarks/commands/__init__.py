"""The subcommands of ``python -m benchmarks``, one module each: ``NAME``, ``HELP``,
``add_arguments(parser)`` and ``main(args)``, which only calls the library. In ``--help`` order."""

from benchmarks.commands import (
    bench,
    caffe_blobs,
    check,
    compare,
    convert_caffe,
    crf_search,
    evaluate,
    list_targets,
    prepare_data,
    report,
    rf,
    run,
    score,
)

COMMANDS = (list_targets, rf, evaluate, prepare_data, run, score, crf_search, bench, report, check, caffe_blobs,
            convert_caffe, compare)
