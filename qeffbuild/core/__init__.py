"""The torch-free engine: manifests, loading, graph, keys, planning, explanations, materialization."""
