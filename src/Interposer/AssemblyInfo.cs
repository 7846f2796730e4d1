// No zero-initialisation of locals and stackalloc buffers: the hooks' frame buffers and the
// unwinder's walk state are written before they are read, and zeroing them cost ~3% of a
// malloc+free pair (perf, scripts/bench churn).
[module: System.Runtime.CompilerServices.SkipLocalsInit]
