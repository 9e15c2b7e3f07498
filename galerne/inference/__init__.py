"""Engine-neutral domain types and the one path from a wire request to them (`validate`)."""
