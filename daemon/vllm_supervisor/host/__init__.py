"""Facts about this host, standard library only: which user may use which path, where
the runtime and state folders are, the installed unit file, the Hugging Face cache."""
