"""Sampling from PixelSNAIL priors: a reference sampler (one forward per position), the cached and the
compiled incremental samplers (one implementation of a position's work, `rows`, run eagerly or compiled),
and top-down sampling of a hierarchy. For the same generator state every sampler gives the same codes."""
from .controls import pick, uniforms
from .hierarchy import SAMPLERS, sample_hierarchy
from .rows import COMPILE_CHUNK, COMPILE_UNIT_STEPS, compile_chunk
from .samplers import sample_cached, sample_compiled, sample_reference
from .weights import PriorWeights

__all__ = ["COMPILE_CHUNK", "COMPILE_UNIT_STEPS", "PriorWeights", "SAMPLERS", "compile_chunk", "pick",
           "sample_cached", "sample_compiled", "sample_hierarchy", "sample_reference", "uniforms"]
