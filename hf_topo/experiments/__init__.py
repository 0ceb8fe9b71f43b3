"""The experiments: runs that train and measure several models to reproduce or test a claim, on top of the library.

=====================================  ==============================================================================
module                                 what
=====================================  ==============================================================================
:mod:`~.recipes`                       the small CPU recipe of one pretraining run; the held-out split of a text file
:mod:`~.families`                      the model families (baseline, TopoNet, WS, AS, TopoLM, ...) and
                                       :func:`~.families.train_family`: one model of a family, or the one saved
:mod:`~.statistics`                    the verdict rule: two-sided paired t-tests over seeds, Holm across a table,
                                       effect sizes, correlations (Student's t without SciPy)
:mod:`~.claims`                        ``hf-topo claims``: every CPU-testable claim of the papers over several seeds
:mod:`~.vision_claims`                 ``hf-topo claims --domain vision``: the vision claims (TopoNets' and Truong &
                                       Hasson's) over several seeds on the digits
:mod:`~.tau_sweep`                     the τ sweep of ``hf-topo claims`` and the TopoNets paper's designs on it
                                       (Fig. 2B, 3B / A.9, 4A, 4B / A.10) with their figures
:mod:`~.compare_regularizers`          ``hf-topo compare-regularizers``: the regularizers on one recipe
:mod:`~.compare_lora`                  ``hf-topo compare-lora``: one LoRA recipe on a baseline and TopoNets
:mod:`~.demo`                          ``hf-topo demo``: a small TopoNet and its τ=0 twin, trained and analysed
=====================================  ==============================================================================

Each ``hf-topo`` command above is a parser and a ``main`` in :mod:`hf_topo.cli` that calls the experiment's function.
Like scripts, the experiments print their progress and their tables. Import the modules themselves (this package
imports none of them, so ``import hf_topo.experiments`` costs nothing).
"""
