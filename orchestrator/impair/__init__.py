"""Link impairments (netem) where the kernel has no sch_netem: the user-space delay line."""
