"""groundroll."""
