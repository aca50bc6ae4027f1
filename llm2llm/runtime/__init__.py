"""The process runtime: each phase in a process of its own (phases), proof that its memory was
released (memory), which devices each phase gets (gpu_plan), and the runner the loop drives them
with (runner). It knows nothing of training or serving: what it runs is passed in."""
