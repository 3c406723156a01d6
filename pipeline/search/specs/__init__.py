"""The registered search stages, one module each (``pipeline.search.registry.SEARCH_STAGES``)."""
