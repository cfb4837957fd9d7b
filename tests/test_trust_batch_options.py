"""dicom-batch's options: the library names a bad option by its BatchOptions field (what a Python caller
passed), the command line by its flag (#11)."""

from __future__ import annotations

import pytest

from smallseg.cli.dicom_batch import as_flags as _dicom_batch_flags
from smallseg.errors import SmallsegError
from smallseg.pipeline.dicom_batch import BatchOptions

CASES = [
    (dict(preset="bogus"), "preset 'bogus': unknown", "--preset 'bogus': unknown"),
    (dict(batch_size=0), "batch_size 0: must be at least 1", "--batch-size 0: must be at least 1"),
    (dict(min_slices=0), "min_slices 0: must be at least 1", "--min-slices 0: must be at least 1"),
    (dict(min_score=5.0), "min_score 5.0: must be between 0 and 1", "--min-score 5.0: must be between 0 and 1"),
    (dict(link_min_overlap=2.0), "link_min_overlap 2.0: must be in (0, 1]", "--link-overlap 2.0: must be in (0, 1]"),
    (dict(max_gb=-1.0), "max_gb -1.0: must be positive", "--max-gb -1.0: must be positive"),
    (dict(tile_size_px=8), "tile_size_px 8: use at least 16 px", "--tile 8: use at least 16 px"),
    (dict(normalize="bogus"), "normalize bogus: use one of model,", "--normalize bogus: use one of model,"),
    (dict(normalize="fixed", percentiles=(1, 99)), "percentiles 1,99: apply to percentile normalisation",
     "--percentiles 1,99: apply to percentile normalisation"),
    (dict(preset="lung", normalize="percentile"), "preset 'lung': give a preset or normalize / percentiles",
     "--preset 'lung': give a preset"),
]


@pytest.mark.parametrize("fields, library, cli", CASES)
def test_library_names_fields_and_the_cli_names_flags(fields, library, cli):
    with pytest.raises(SmallsegError) as info:
        BatchOptions(out_dir="out", **fields)  # refused when built
    message = str(info.value)
    assert message.startswith(library), message
    assert "--" not in message  # no flag in a library message
    assert _dicom_batch_flags(message).startswith(cli)


def test_flag_translation_leaves_other_words_alone():
    assert _dicom_batch_flags("1.2.3: preset lung applied") == "1.2.3: preset lung applied"
    assert _dicom_batch_flags("stack over max_gb 4") == "stack over --max-gb 4"
