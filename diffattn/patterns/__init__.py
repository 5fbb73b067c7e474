"""Static attention patterns as pure functions of the latent grid: Radial's mask (`radial`) and FreeSwim's inward
window (`windows`). Methods build them once per grid, outside compiled graphs, and cache the resulting plans."""
