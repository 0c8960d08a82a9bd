"""``rc.sample``'s arguments: kernel objects, options checked against the chosen sampler (one-line
errors naming the argument), and randomness (seeded = reproducible, unseeded = torch's default
generator)."""

import pytest
import torch

import recompose as rc
from conftest import ring_gmm, skewed_gmm


@pytest.fixture(scope="module")
def model():
    return skewed_gmm() * ring_gmm(std=0.3)


RUN = {"num_levels": 4, "num_steps": 2}


def test_a_sampler_object_is_the_same_run_as_its_shortcut(model):
    by_name = rc.sample(model, 16, "hmc", num_leapfrog_steps=2, damping=0.25, seed=0, **RUN)
    sampler = rc.samplers.Annealed(rc.mcmc.hmc(num_leapfrog_steps=2, damping=0.25),
                                   num_steps=RUN["num_steps"])
    by_object = rc.sample(model, 16, sampler, num_levels=RUN["num_levels"], seed=0)
    by_kernel = rc.sample(model, 16, rc.mcmc.hmc(num_leapfrog_steps=2, damping=0.25), seed=0,
                          **RUN)
    assert torch.equal(by_name.x, by_object.x) and torch.equal(by_name.x, by_kernel.x)
    assert by_object.info.sampler == "hmc"
    settings = by_object.info.settings
    assert [settings[k] for k in ("num_leapfrog_steps", "damping", "mass")] == [2, 0.25, 1.0]
    assert by_object.info.to_dict()["settings"] == by_name.info.to_dict()["settings"]
    default = rc.sample(model, 16, "hmc", seed=0, **RUN)
    assert not torch.equal(default.x, by_name.x)  # the options really reach the kernel
    # a sampler object holds no state of a run: reused, it gives the same samples
    again = rc.sample(model, 16, sampler, num_levels=RUN["num_levels"], seed=0)
    assert torch.equal(again.x, by_object.x)


def test_every_shortcut_is_its_object_with_the_same_defaults(model):
    objects = {"reverse": rc.samplers.Reverse(), "ode": rc.samplers.ODE(),
               "ula": rc.samplers.Annealed(rc.mcmc.ula()),
               "uhmc": rc.samplers.Annealed(rc.mcmc.uhmc()),
               "mala": rc.samplers.Annealed(rc.mcmc.mala()),
               "hmc": rc.samplers.Annealed(rc.mcmc.hmc()),
               "smc": rc.samplers.SMC(), "fkc": rc.samplers.FKC()}
    assert sorted(objects) == sorted(rc.SAMPLERS)
    for name, obj in objects.items():
        a = rc.sample(model, 8, name, num_levels=3, seed=2)
        b = rc.sample(model, 8, obj, num_levels=3, seed=2)
        assert torch.equal(a.x, b.x), name
        assert a.info.settings == b.info.settings, name


def test_the_default_sampler_is_hmc(model):
    assert torch.equal(rc.sample(model, 8, seed=1, **RUN).x,
                       rc.sample(model, 8, "hmc", seed=1, **RUN).x)


def test_sample_has_at_most_twelve_parameters():
    import inspect

    params = inspect.signature(rc.sample).parameters.values()
    named = [p for p in params if p.kind is not p.VAR_KEYWORD]
    assert len(named) <= 12, [p.name for p in named]


@pytest.mark.parametrize("call,name", [
    (lambda m: rc.sample(m, 5, "mala", num_leapfrog_steps=7), "num_leapfrog_steps"),
    (lambda m: rc.sample(m, 5, "ula", damping=0.5), "damping"),
    (lambda m: rc.sample(m, 5, "ula", mass=2.0), "mass"),
    (lambda m: rc.sample(m, 5, "hmc", num_leapfrog=3), "num_leapfrog"),  # a typo
    (lambda m: rc.sample(m, 5, "mala", adapt=False, target_accept=0.6), "target_accept"),
    (lambda m: rc.sample(m, 5, "ula", target_accept=0.6), "target_accept"),
    (lambda m: rc.sample(m, 5, "ula", adapt=True), "adapt"),
    (lambda m: rc.sample(m, 5, rc.mcmc.hmc(), damping=0.1), "damping"),
    (lambda m: rc.sample(m, 5, rc.samplers.Reverse(), num_steps=2), "num_steps"),
    (lambda m: rc.sample(m, 5, "hmc", kernel=rc.mcmc.hmc()), "kernel"),
    (lambda m: rc.sample(m, 5, "reverse", step_size=0.1), "step_size"),
    (lambda m: rc.sample(m, 5, "reverse", step_power=1.0), "step_power"),
    (lambda m: rc.sample(m, 5, "reverse", adapt=False), "adapt"),
    (lambda m: rc.sample(m, 5, "reverse", target_accept=0.6), "target_accept"),
    (lambda m: rc.sample(m, 5, "reverse", predictor=False), "predictor"),
    (lambda m: rc.sample(m, 5, "reverse", denoise=False), "denoise"),
    (lambda m: rc.sample(m, 5, "reverse", damping=0.5), "damping"),
    (lambda m: rc.sample(m, 5, "ode", num_steps=2), "num_steps"),
    (lambda m: rc.sample(m, 5, "hmc", ess_threshold=0.5), "ess_threshold"),
    (lambda m: rc.sample(m, 5, "hmc", moves="ula"), "moves"),
    (lambda m: rc.sample(m, 5, "smc", predictor=False), "predictor"),
    (lambda m: rc.sample(m, 5, "fkc", proposal="ddpm"), "proposal"),
    (lambda m: rc.sample(m, 5, "fkc", num_steps=2), "num_steps"),
    (lambda m: rc.sample(m, 5, "fkc", step_size=0.1), "step_size"),
    (lambda m: rc.sample(m, 5, "reverse", groups=torch.zeros(5, dtype=torch.long)), "groups"),
    (lambda m: rc.sample(m, 5, "smc", x_init=torch.zeros(5, 2)), "x_init"),
    (lambda m: rc.sample(m, 5, "reverse", reverse_step=False), "reverse_step"),
], ids=lambda v: v if isinstance(v, str) else "")
def test_an_inapplicable_argument_raises_one_line_naming_it(model, call, name):
    with pytest.raises(TypeError) as err:
        call(model)
    message = str(err.value)
    assert name in message and "\n" not in message, message


def test_the_errors_read_well(model):
    with pytest.raises(TypeError, match=r"^num_leapfrog_steps does not apply to sampler 'mala' "
                                        r"\(its options: energy, quadrature, num_steps, "):
        rc.sample(model, 5, "mala", num_leapfrog_steps=7)
    with pytest.raises(TypeError, match=r"^damping cannot be combined with a kernel object; set "
                                        r"it in the factory, e.g. rc.mcmc.hmc\(damping=...\)$"):
        rc.sample(model, 5, rc.mcmc.hmc(), damping=0.1)
    with pytest.raises(TypeError, match=r"^num_steps cannot be combined with a sampler object; "
                                        r"set it in its constructor, e.g. "
                                        r"rc.samplers.Annealed\(..., num_steps=...\)$"):
        rc.sample(model, 5, rc.samplers.Annealed(rc.mcmc.hmc()), num_steps=3)
    with pytest.raises(TypeError, match="^target_accept does not apply to kernel 'hmc' with "
                                        "adapt=False$"):
        rc.sample(model, 5, "hmc", adapt=False, target_accept=0.7)
    with pytest.raises(TypeError, match="takes no arguments"):
        rc.samplers.Reverse(num_steps=3)  # the constructor itself refuses


def test_num_steps_with_reverse_is_an_error(model):
    with pytest.raises(TypeError, match="^num_steps does not apply to sampler 'reverse' "):
        rc.sample(model, 5, "reverse", num_levels=3, num_steps=2, seed=0)


def test_values_out_of_range_raise_value_errors(model):
    with pytest.raises(ValueError, match="damping"):
        rc.sample(model, 5, "hmc", damping=1.5)
    with pytest.raises(ValueError, match="num_leapfrog_steps"):
        rc.sample(model, 5, "uhmc", num_leapfrog_steps=0)
    with pytest.raises(ValueError, match="not both"):
        rc.sample(model, 5, "ula", seed=0, generator=torch.Generator())


def test_unseeded_calls_use_torchs_default_generator(model):
    a = rc.sample(model, 16, "ula", **RUN).x
    b = rc.sample(model, 16, "ula", **RUN).x
    assert not torch.equal(a, b)  # no hidden seed 0
    torch.manual_seed(11)
    c = rc.sample(model, 16, "ula", **RUN).x
    torch.manual_seed(11)
    d = rc.sample(model, 16, "ula", **RUN).x
    assert torch.equal(c, d)
    assert not torch.equal(c, rc.sample(model, 16, "ula", seed=0, **RUN).x)
    seeded = [rc.sample(model, 16, "ula", seed=0, **RUN).x for _ in range(2)]
    assert torch.equal(*seeded)
