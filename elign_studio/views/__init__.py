"""Views of the studio: each builds widgets around a StudioSession and never holds state of its own."""
