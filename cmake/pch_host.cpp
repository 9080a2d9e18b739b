// Hosts the precompiled ATen header that every executable reuses (see omniflux_use_pch).
int main() { return 0; }
