-- Argo CD actions of a KeeperSecret: "refresh" syncs it from Keeper now.
local actions = {}
actions["refresh"] = { ["disabled"] = obj.metadata.deletionTimestamp ~= nil }
return actions
