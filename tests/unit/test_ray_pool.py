"""The Ray batch engine's actor pool: what it asks Ray for, so that the actors and Ray Data's tasks can all run."""

from __future__ import annotations

import logging

import pytest

from tasks.runtime.ray_batch import ACTOR_CPUS, TASK_CPUS, Pool, PoolTooLarge, plan_pool, pool_for_cluster


def leaves_a_task_room(pool: Pool, cluster_cpus: float) -> bool:
    return pool.actors * pool.actor_cpus + TASK_CPUS <= cluster_cpus


@pytest.mark.parametrize("cpus", [1, 1.5, 2, 3, 4, 8])
def test_the_default_pool_is_one_actor_per_cpu_and_leaves_a_cpu_for_the_read_tasks(cpus: float) -> None:
    pool = plan_pool(None, cpus)
    assert pool.actors == max(1, min(int(cpus), int(2 * cpus - 2)))
    assert leaves_a_task_room(pool, cpus)


def test_actors_ask_for_half_a_cpu_unless_the_cluster_is_under_two_cpus() -> None:
    assert plan_pool(None, 2) == Pool(actors=2, actor_cpus=ACTOR_CPUS)
    assert plan_pool(4, 3) == Pool(actors=4, actor_cpus=ACTOR_CPUS)
    # one CPU: a read task asking for it would never run beside an actor holding half of it
    assert plan_pool(None, 1) == Pool(actors=1, actor_cpus=0.0)


@pytest.mark.parametrize(("actors", "cpus", "most"), [(3, 2, 2), (2, 1, 1), (20, 8, 14)])
def test_more_actors_than_fit_are_refused_with_how_many_would(actors: int, cpus: float, most: int) -> None:
    with pytest.raises(PoolTooLarge, match=rf"cluster has {cpus:g} CPUs: at most {most} actors fit"):
        plan_pool(actors, cpus)
    assert leaves_a_task_room(plan_pool(most, cpus), cpus)


def test_on_a_cluster_that_may_grow_a_pool_too_large_for_now_is_a_warning(caplog) -> None:
    with caplog.at_level(logging.WARNING, logger="tasks.runtime.ray_batch"):
        pool = pool_for_cluster(6, 2, fixed=False)
    assert pool == Pool(actors=6, actor_cpus=ACTOR_CPUS)  # what an autoscaler sizes the new nodes by
    assert "at most 2 actors fit" in caplog.text and "waits until the cluster has grown" in caplog.text
    with pytest.raises(PoolTooLarge):
        pool_for_cluster(6, 2, fixed=True)


def test_a_head_without_cpus_asks_for_workers_rather_than_failing() -> None:
    """An autoscaling cluster whose head takes no work (num-cpus 0) has no CPU until a worker joins."""
    assert pool_for_cluster(None, 0, fixed=False) == Pool(actors=1, actor_cpus=ACTOR_CPUS)
