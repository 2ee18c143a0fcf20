"""What the three programs (supervisor, gateway, vllmctl) say to each other, with no
dependency on any of them: the shape of the JSON bodies they accept."""
