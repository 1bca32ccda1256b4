#!lua name=switchyard
-- The Redis side of switchyard (SPEC 8, 15-17), loaded by every node at start and
-- again whenever Redis answers that it is missing (FUNCTION LOAD REPLACE). Every
-- decision that must hold cluster-wide is made here, atomically: offsets, epochs and
-- entry ids, idempotency, presence, and the transitions of the user registry.
--
--
-- The library is put together from the files of src/broker/redis/lua/ in one order:
-- common helpers, history, state, presence, the user registry, occupancy, read state
-- and receipts, fallbacks. A channel's keys share the hash tag of <prefix>:{<channel>},
-- so every call names keys of one Redis Cluster slot.

