"""fleet: a terminal console for bare-metal fleets."""
