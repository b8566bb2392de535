"""Operating MPG: health and readiness, system service integration, housekeeping."""
