"""Operations: liveness and readiness for whoever runs Tidings."""
