"""Stage helpers that hold logic of their own."""


def test_pool_replay_sample_is_seeded_per_task_and_bounded():
    from fomoflux.pipeline.task_data import replay_sample

    one = replay_sample(1000, 50, seed=0, task=3)
    assert one == replay_sample(1000, 50, seed=0, task=3) and len(set(one)) == 50 and one == sorted(one)
    assert one != replay_sample(1000, 50, seed=0, task=4) and one != replay_sample(1000, 50, seed=1, task=3)
    assert replay_sample(40, 50, seed=0, task=3) is None  # a small pool is used whole
