#include "worker/explain/checkpoint_model.h"

#include "worker/formats/checkpoint.h"
#include "worker/formats/state_dict.h"
#include "worker/train/config.h"

namespace effnet::explain {

Result<CheckpointModel> LoadCheckpointModel(const std::string& dir) {
  EFFNET_ASSIGN_OR_RETURN(auto meta, formats::ReadCheckpointMeta(dir));
  auto cfg = train::ParseTrainConfig(meta.config_yaml, {"checkpoint.resume=never"});
  if (!cfg.ok()) return cfg.status().WithContext(dir + " config");
  CheckpointModel m;
  try {
    m.model = model::EfficientNetV2(meta.model);
  } catch (const StatusError& e) {
    return e.status().WithContext(dir + ": building " + meta.model_name);
  }
  formats::CheckpointTarget target;
  target.model = m.model.get();
  EFFNET_RETURN_IF_ERROR(formats::LoadCheckpoint(dir, target).status());
  if (meta.has_ema && cfg->ema.evaluate_with_ema) {
    EFFNET_ASSIGN_OR_RETURN(auto ema, formats::ReadCheckpointWeights(dir, /*ema=*/true));
    EFFNET_RETURN_IF_ERROR(formats::LoadStateDict(*m.model, ema).WithContext(dir + " EMA"));
    m.ema = true;
  }
  m.model->eval();
  m.class_names = meta.class_names;
  m.eval_image_size =
      meta.eval_image_size > 0 ? meta.eval_image_size : cfg->job.progressive.max_image_size;
  m.augment = cfg->augment;
  return m;
}

}  // namespace effnet::explain
