"""The n-gram language model folder: what the `lm` stage writes and the beam-search decoder (asrflow.decode) reads.

The file names live here, apart from both, so that a decoder depends on the folder's layout, not on how it is built.
"""

from __future__ import annotations

from asrflow.errors import AsrflowError

TEXT_FILE, ARPA_FILE, BINARY_FILE, INFO_FILE = "text.txt", "lm.arpa", "lm.bin", "lm.json"


class LMError(AsrflowError):
    """The language model cannot be built or used; the message names the file and the fix."""
