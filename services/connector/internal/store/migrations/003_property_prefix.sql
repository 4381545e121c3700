-- The label before a segment's name in the destination's property
-- ("[Heap] Trial users"); empty means the type's default.
ALTER TABLE cn_connections ADD COLUMN property_prefix TEXT NOT NULL DEFAULT '';
