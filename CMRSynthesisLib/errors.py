"""Exception types. Messages are written for the person at the scanner console: they name the file,
tag, shape or geometry at fault and what to do."""


class CMRSynthesisError(Exception):
    """Base class of every error this library raises on purpose."""


class InputError(CMRSynthesisError):
    """An input file, node or array cannot be used (unreadable, corrupt, wrong shape, NaN, ...)."""


class GeometryError(InputError):
    """Two inputs that must share a voxel grid do not (shape, spacing, origin or direction)."""


class CheckpointError(CMRSynthesisError):
    """A checkpoint folder is missing, incomplete, or fails its sha256 check."""


class OutputError(CMRSynthesisError):
    """An output cannot be written (it would overwrite an input, or the folder is not writable)."""


class Cancelled(CMRSynthesisError):
    """The user cancelled a long computation through the progress callback."""
