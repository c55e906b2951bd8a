#include "worker/formats/pretrained.h"

#include "common/log.h"
#include "worker/formats/state_dict.h"

namespace effnet::formats {

Status LoadPretrained(model::EfficientNetV2Impl& model, const std::string& path,
                      const TransferOptions& options) {
  EFFNET_ASSIGN_OR_RETURN(WeightsFormat format, DetectFormat(path));
  EFFNET_ASSIGN_OR_RETURN(StateDict dict, ReadStateDict(path));
  const at::Tensor* w = dict.find("classifier.weight");
  const at::Tensor* b = dict.find("classifier.bias");
  const int classes = model.config().num_classes;
  const bool same_head = w && b && w->dim() == 2 && w->size(0) == classes &&
                         w->size(1) == model.architecture().head_channels;
  LoadOptions lo;
  const bool load_head = same_head && !options.reset_classifier;
  if (!load_head) lo.skip_prefixes.push_back("classifier.");
  EFFNET_RETURN_IF_ERROR(LoadStateDict(model, dict, lo)
                             .WithContext("importing " + path + " (" + FormatName(format) + ")"));
  if (!load_head) {
    model.reset_classifier(classes);
    log::Info("pretrained " + path + ": backbone loaded, classifier re-initialised for " +
              std::to_string(classes) + " classes" +
              (w ? " (file had " + ShapeString(w->sizes()) + ")" : ""));
  }
  if (options.freeze_stages < 0) return Status::Ok();
  try {
    model.freeze_stages(options.freeze_stages);
  } catch (const StatusError& e) {
    return e.status();
  }
  return Status::Ok();
}

}  // namespace effnet::formats
