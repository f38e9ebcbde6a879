"""Shape tracing: the tracer (tracer), its text (render), the trace verb (run), what to trace
(request) and saved traces (files).
"""
