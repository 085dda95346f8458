"""Codec layer: real ``.mdl`` files (DESIGN §3–4). The container with its checksums and atomic
writes (``container``), encode / decode / inspect over the native chunk coder (``api``) and a
plain Python transcription of the encoder that the tests hold the native bytes to
(``reference``). Imports the measurement, models and data layers; independent of selection.

    >>> import mdlsae.codec
    >>> callable(mdlsae.codec.encode) and callable(mdlsae.codec.decode) and callable(mdlsae.codec.inspect)
    True
"""

from .api import Decoded, MdlInfo, auto_chunk_rows, build_model, check_sae, decode, decode_file, encode, inspect
from .container import MdlFile, MdlSet, open_mdl

__all__ = ["Decoded", "MdlFile", "MdlInfo", "MdlSet", "auto_chunk_rows", "build_model", "check_sae", "decode",
           "decode_file", "encode", "inspect", "open_mdl"]
