"""Operations: the CLI, configuration, logging, the process supervisor, metrics."""
