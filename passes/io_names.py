"""Names of the graph inputs and outputs the GLASS passes add (templates over ``{layer}``)."""

PAST_NEURON_STATS = "past_neuron_stats.{layer}"
PRESENT_NEURON_STATS = "present_neuron_stats.{layer}"
KEPT_NEURONS = "kept_neurons.{layer}"
PRIOR_RANK = "glass.prior_rank"  # [layers, I] ranks of the global prior, 0 = most important
LAM = "glass.lam"  # weight of the local ranking
KEEP = "glass.k"  # neurons kept per layer, [1] int64
