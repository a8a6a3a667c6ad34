-- Argo CD health of flowline.io Flow, Run and Schedule objects, from their kstatus conditions.
local hs = { status = "Progressing", message = "Waiting for the controller" }

local function condition(kind)
  if obj.status == nil or obj.status.conditions == nil then
    return nil
  end
  for _, c in ipairs(obj.status.conditions) do
    if c.type == kind then
      return c
    end
  end
  return nil
end

if obj.status == nil then
  return hs
end
local generation = obj.metadata.generation
local observed = obj.status.observedGeneration
if generation ~= nil and (observed == nil or observed < generation) then
  hs.message = "Waiting for the controller to observe generation " .. tostring(generation)
  return hs
end

-- A finished Run is judged by its phase: Ready only if it succeeded, Stalled otherwise.
if obj.kind == "Run" then
  local phase = obj.status.phase
  if phase == "Failed" or phase == "Aborted" or phase == "TimedOut" then
    hs.status = "Degraded"
    hs.message = obj.status.message or ("Run " .. phase)
    return hs
  end
  if phase == "Succeeded" then
    hs.status = "Healthy"
    hs.message = obj.status.message or "Run Succeeded"
    return hs
  end
end

local stalled = condition("Stalled")
if stalled ~= nil and stalled.status == "True" then
  hs.status = "Degraded"
  hs.message = stalled.message or stalled.reason or "Stalled"
  return hs
end
local ready = condition("Ready")
if ready ~= nil and ready.status == "True" then
  hs.status = "Healthy"
  hs.message = ready.message or "Ready"
  return hs
end
local reconciling = condition("Reconciling")
if reconciling ~= nil and reconciling.status == "True" then
  hs.message = reconciling.message or reconciling.reason or "Reconciling"
  return hs
end
if ready ~= nil and ready.message ~= nil and ready.message ~= "" then
  hs.message = ready.message
end
return hs
