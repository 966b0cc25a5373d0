"""contentpipe.pipelines: the pipelines service (defines pipelines and executes their runs)."""
