"""The synthesis and analysis methods, one module each (declared by its `SPEC`), behind one registry: `load_method`
and `method_specs` (see `registry`)."""

from .registry import get_spec, load_method, method_specs, register, unregister

__all__ = ["get_spec", "load_method", "method_specs", "register", "unregister"]
