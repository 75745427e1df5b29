-- Orthanc: send every stable study that holds a CT series to inspector's medical-gateway (modality "inspector").
-- The reports come back as a new SR series of the same study, which has no CT series, so it is not sent again.
function OnStableStudy(studyId, tags, metadata)
  for _, series in pairs(ParseJson(RestApiGet('/studies/' .. studyId .. '/series'))) do
    if series['MainDicomTags']['Modality'] == 'CT' then
      RestApiPost('/modalities/inspector/store', studyId)
      return
    end
  end
end
