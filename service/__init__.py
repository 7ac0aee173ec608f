"""The web side of the loyalty-points reminder service, and the domain logic both processes share."""
