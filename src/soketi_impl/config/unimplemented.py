"""soketi's settings that soketi-impl accepts but does not implement.

Setting one logs a warning at start (unless its value is what we do anyway), so a
deployment moving from soketi starts, and says what it will not get.
"""

from __future__ import annotations

from .settings import APPS_KEY, SETTINGS_BY_KEY

NOT_IMPLEMENTED_ENV: dict[str, str] = {
    "SOKETI_ADAPTER_CLUSTER_REQUESTS_TIMEOUT": "adapter.cluster.requestsTimeout",
    "SOKETI_ADAPTER_REDIS_CLUSTER_MODE": "adapter.redis.clusterMode",
    "SOKETI_ADAPTER_REDIS_REQUESTS_TIMEOUT": "adapter.redis.requestsTimeout",
    "SOKETI_ADAPTER_REDIS_SUB_OPTIONS": "adapter.redis.redisSubOptions",
    "SOKETI_ADAPTER_REDIS_PUB_OPTIONS": "adapter.redis.redisPubOptions",
    "SOKETI_ADAPTER_REDIS_SHARD_MODE": "adapter.redis.shardMode",
    "SOKETI_APP_MANAGER_DYNAMODB_TABLE": "appManager.dynamodb.table",
    "SOKETI_APP_MANAGER_DYNAMODB_REGION": "appManager.dynamodb.region",
    "SOKETI_APP_MANAGER_DYNAMODB_ENDPOINT": "appManager.dynamodb.endpoint",
    "SOKETI_CACHE_DRIVER": "cache.driver",
    "SOKETI_CACHE_REDIS_CLUSTER_MODE": "cache.redis.clusterMode",
    "SOKETI_CACHE_REDIS_OPTIONS": "cache.redis.redisOptions",
    "SOKETI_CLUSTER_CHECK_INTERVAL": "cluster.checkInterval",
    "SOKETI_CLUSTER_HOST": "cluster.hostname",
    "SOKETI_CLUSTER_IGNORE_PROCESS": "cluster.ignoreProcess",
    "SOKETI_CLUSTER_BROADCAST_ADDRESS": "cluster.broadcast",
    "SOKETI_CLUSTER_KEEPALIVE_INTERVAL": "cluster.helloInterval",
    "SOKETI_CLUSTER_MASTER_TIMEOUT": "cluster.masterTimeout",
    "SOKETI_CLUSTER_MULTICAST_ADDRESS": "cluster.multicast",
    "SOKETI_CLUSTER_NODE_TIMEOUT": "cluster.nodeTimeout",
    "SOKETI_CLUSTER_PORT": "cluster.port",
    "SOKETI_CLUSTER_PREFIX": "cluster.prefix",
    "SOKETI_CLUSTER_UNICAST_ADDRESSES": "cluster.unicast",
    "SOKETI_DB_REDIS_SENTINELS": "database.redis.sentinels",
    "SOKETI_DB_REDIS_SENTINEL_PASSWORD": "database.redis.sentinelPassword",
    "SOKETI_DB_REDIS_CLUSTER_NODES": "database.redis.clusterNodes",
    "SOKETI_DB_REDIS_INSTANCE_NAME": "database.redis.name",
    "SOKETI_HTTP_ACCEPT_TRAFFIC_MEMORY_THRESHOLD": "httpApi.acceptTraffic.memoryThreshold",
    "SOKETI_QUEUE_REDIS_OPTIONS": "queue.redis.redisOptions",
    "SOKETI_QUEUE_REDIS_CLUSTER_MODE": "queue.redis.clusterMode",
    "SOKETI_QUEUE_SQS_REGION": "queue.sqs.region",
    "SOKETI_QUEUE_SQS_CLIENT_OPTIONS": "queue.sqs.clientOptions",
    "SOKETI_QUEUE_SQS_URL": "queue.sqs.queueUrl",
    "SOKETI_QUEUE_SQS_ENDPOINT": "queue.sqs.endpoint",
    "SOKETI_QUEUE_SQS_PROCESS_BATCH": "queue.sqs.processBatch",
    "SOKETI_QUEUE_SQS_BATCH_SIZE": "queue.sqs.batchSize",
    "SOKETI_QUEUE_SQS_POLLING_WAIT_TIME_MS": "queue.sqs.pollingWaitTimeMs",
    "SOKETI_RATE_LIMITER_DRIVER": "rateLimiter.driver",
    "SOKETI_RATE_LIMITER_REDIS_OPTIONS": "rateLimiter.redis.redisOptions",
    "SOKETI_RATE_LIMITER_REDIS_CLUSTER_MODE": "rateLimiter.redis.clusterMode",
}

# Values of unimplemented settings that describe what we do anyway: no warning.
HARMLESS: dict[str, object] = {
    "rateLimiter.driver": "local",
    "cache.driver": "memory",
    "cors.credentials": True,
}

# soketi file keys we accept but do not implement, beyond NOT_IMPLEMENTED_ENV's.
NOT_IMPLEMENTED_KEYS: frozenset[str] = frozenset(NOT_IMPLEMENTED_ENV.values()) | {
    "cors.credentials",
    "cors.methods",
    "cors.allowedHeaders",
}
# Whole soketi sections we do not implement: any key under them is accepted with a warning.
NOT_IMPLEMENTED_SECTIONS: tuple[str, ...] = (
    "adapter.cluster.",
    "appManager.dynamodb.",
    "cache.",
    "cluster.",
    "httpApi.acceptTraffic.",
    "instance.",
    "rateLimiter.",
)


def not_implemented(key: str) -> bool:
    """Whether ``key`` is a soketi file key that is accepted with a warning."""
    return key in NOT_IMPLEMENTED_KEYS or key.startswith(NOT_IMPLEMENTED_SECTIONS)


def is_leaf(key: str) -> bool:
    """Whether ``key`` names one setting, so an object value is not flattened."""
    return key in SETTINGS_BY_KEY or key == APPS_KEY or not_implemented(key)

