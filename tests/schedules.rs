//! Learning-rate schedules against torch.optim.lr_scheduler's own sequences, Keras' formula,
//! and on the GPU with K steps per submit.

mod common;

use common::*;
use wgpu_optim::schedule::{
    ChainedLr, ConstantLr, CosineAnnealingLr, CosineAnnealingWarmRestarts, CosineDecayRestarts, CyclicLr, CyclicMode,
    ExponentialLr, LinearLr, MultiStepLr, MultiplicativeLr, OneCycleLr, PlateauMode, PolynomialLr, ReduceLrOnPlateau,
    Schedule, SequentialLr, StepLr, ThresholdMode,
};
use wgpu_optim::{AdamW, CpuOptimizer, Error, GpuOptimizer};

/// The learning rate of optimizer steps 0..40 with base lr 0.1, printed by
/// `scripts/torch_schedules.py`:
#[rustfmt::skip]
const TORCH: &[(&str, &[f64])] = &[
// torch 2.15.0+cu132
    ("step", &[0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.05, 0.05, 0.05, 0.05, 0.05, 0.05, 0.05, 0.025, 0.025, 0.025, 0.025, 0.025, 0.025, 0.025, 0.0125, 0.0125, 0.0125, 0.0125, 0.0125, 0.0125, 0.0125, 0.00625, 0.00625, 0.00625, 0.00625, 0.00625, 0.00625, 0.00625, 0.003125, 0.003125, 0.003125, 0.003125, 0.003125]),
    ("multistep", &[0.1, 0.1, 0.1, 0.03, 0.03, 0.03, 0.03, 0.03, 0.03, 0.03, 0.0026999999999999997, 0.0026999999999999997, 0.0026999999999999997, 0.0026999999999999997, 0.0026999999999999997, 0.0026999999999999997, 0.0026999999999999997, 0.0026999999999999997, 0.0026999999999999997, 0.0026999999999999997, 0.0026999999999999997, 0.0026999999999999997, 0.0026999999999999997, 0.0026999999999999997, 0.0026999999999999997, 0.0008099999999999998, 0.0008099999999999998, 0.0008099999999999998, 0.0008099999999999998, 0.0008099999999999998, 0.0008099999999999998, 0.0008099999999999998, 0.0008099999999999998, 0.0008099999999999998, 0.0008099999999999998, 0.0008099999999999998, 0.0008099999999999998, 0.0008099999999999998, 0.0008099999999999998, 0.0008099999999999998]),
    ("exponential", &[0.1, 0.09300000000000001, 0.08649000000000001, 0.08043570000000001, 0.07480520100000002, 0.06956883693000002, 0.06469901834490002, 0.06017008706075702, 0.05595818096650403, 0.052041108298848754, 0.04839823071792934, 0.04501035456767429, 0.0418596297479371, 0.0389294556655815, 0.036204393768990796, 0.033670086205161445, 0.03131318017080015, 0.02912125755884414, 0.02708276952972505, 0.0251869756626443, 0.0234238873662592, 0.021784215250621058, 0.020259320183077585, 0.018841167770262155, 0.017522286026343804, 0.016295726004499737, 0.015155025184184757, 0.014094173421291824, 0.013107581281801397, 0.0121900505920753, 0.011336747050630029, 0.010543174757085928, 0.009805152524089913, 0.009118791847403619, 0.008480476418085366, 0.00788684306881939, 0.0073347640540020334, 0.006821330570221892, 0.00634383743030636, 0.0058997688101849145]),
    ("cosine", &[0.1, 0.09891830623632339, 0.09572050015330874, 0.0905463412215599, 0.08362196501476347, 0.07525, 0.0657963412215599, 0.05567415893174885, 0.04532584106825117, 0.03520365877844011, 0.025750000000000012, 0.017378034985236535, 0.010453658778440105, 0.005279499846691251, 0.0020816937636766184, 0.001, 0.0020816937636766184, 0.005279499846691257, 0.010453658778440095, 0.017378034985236504, 0.025749999999999974, 0.035203658778440096, 0.04532584106825112, 0.055674158931748825, 0.06579634122155988, 0.07525, 0.08362196501476349, 0.0905463412215599, 0.09572050015330875, 0.09891830623632339, 0.10000000000000002, 0.0989183062363234, 0.09572050015330878, 0.09054634122155993, 0.0836219650147635, 0.07525000000000004, 0.06579634122155993, 0.05567415893174887, 0.045325841068251195, 0.03520365877844013]),
    ("linear", &[0.010000000000000002, 0.0175, 0.025, 0.0325, 0.04, 0.0475, 0.055, 0.06249999999999999, 0.06999999999999999, 0.0775, 0.08499999999999999, 0.09249999999999999, 0.09999999999999999, 0.09999999999999999, 0.09999999999999999, 0.09999999999999999, 0.09999999999999999, 0.09999999999999999, 0.09999999999999999, 0.09999999999999999, 0.09999999999999999, 0.09999999999999999, 0.09999999999999999, 0.09999999999999999, 0.09999999999999999, 0.09999999999999999, 0.09999999999999999, 0.09999999999999999, 0.09999999999999999, 0.09999999999999999, 0.09999999999999999, 0.09999999999999999, 0.09999999999999999, 0.09999999999999999, 0.09999999999999999, 0.09999999999999999, 0.09999999999999999, 0.09999999999999999, 0.09999999999999999, 0.09999999999999999]),
    ("warm restarts", &[0.1, 0.09064183272437243, 0.06614183272437243, 0.03585816727562759, 0.01135816727562758, 0.1, 0.09760176929846254, 0.09064183272437243, 0.07980147736233119, 0.06614183272437243, 0.051000000000000004, 0.03585816727562759, 0.022198522637668826, 0.01135816727562758, 0.004398230701537477, 0.1, 0.09939672868916176, 0.09760176929846254, 0.09465931968523003, 0.09064183272437243, 0.08564823227814083, 0.07980147736233119, 0.07324553448723779, 0.06614183272437243, 0.05866528878697132, 0.051000000000000004, 0.043334711213028704, 0.03585816727562759, 0.028754465512762208, 0.022198522637668826, 0.016351767721859173, 0.01135816727562758, 0.007340680314769979, 0.004398230701537477, 0.0026032713108382548, 0.1, 0.09984894935292328, 0.09939672868916176, 0.09864612609948616, 0.09760176929846254]),
    ("warm restarts mult 1", &[0.1, 0.09330127018922195, 0.07500000000000001, 0.05, 0.025000000000000012, 0.006698729810778065, 0.1, 0.09330127018922195, 0.07500000000000001, 0.05, 0.025000000000000012, 0.006698729810778065, 0.1, 0.09330127018922195, 0.07500000000000001, 0.05, 0.025000000000000012, 0.006698729810778065, 0.1, 0.09330127018922195, 0.07500000000000001, 0.05, 0.025000000000000012, 0.006698729810778065, 0.1, 0.09330127018922195, 0.07500000000000001, 0.05, 0.025000000000000012, 0.006698729810778065, 0.1, 0.09330127018922195, 0.07500000000000001, 0.05, 0.025000000000000012, 0.006698729810778065, 0.1, 0.09330127018922195, 0.07500000000000001, 0.05]),
    ("one cycle", &[0.0040000000000000036, 0.005944337266504118, 0.011619830424103306, 0.020566684770626315, 0.03206007937590945, 0.04516888776288231, 0.058831112237117685, 0.07193992062409055, 0.08343331522937368, 0.0923801695758967, 0.09805566273349588, 0.1, 0.09968561175222017, 0.09874640062350874, 0.09719417773875232, 0.09504846320134738, 0.09233624061657436, 0.089091617757105, 0.08535539763797113, 0.0811745653949763, 0.07660169741935154, 0.07169430017913009, 0.06651408704194597, 0.06112620219362893, 0.055598401412270175, 0.0500002, 0.04440199858772983, 0.03887419780637107, 0.03348631295805405, 0.028306099820869922, 0.023398702580648485, 0.0188258346050237, 0.014645002362028864, 0.010908782242895003, 0.0076641593834256404, 0.004951936798652629, 0.002806222261247683, 0.0012539993764912555, 0.0003147882477798485, 4e-07]),
    ("warmup then cosine", &[0.001, 0.013375, 0.02575, 0.038125, 0.050499999999999996, 0.062875, 0.07525, 0.087625, 0.1, 0.09975923633360985, 0.09903926402016153, 0.09784701678661045, 0.09619397662556435, 0.09409606321741776, 0.09157348061512728, 0.08865052266813686, 0.08535533905932738, 0.08171966420818227, 0.07777851165098011, 0.0735698368412999, 0.0691341716182545, 0.06451423386272312, 0.059754516100806426, 0.054900857016478045, 0.05, 0.04509914298352197, 0.04024548389919359, 0.03548576613727689, 0.030865828381745515, 0.026430163158700115, 0.0222214883490199, 0.01828033579181773, 0.014644660940672627, 0.01134947733186315, 0.008426519384872733, 0.005903936782582253, 0.0038060233744356626, 0.0021529832133895584, 0.0009607359798384783, 0.00024076366639015905]),
    ("constant", &[0.025, 0.025, 0.025, 0.025, 0.025, 0.025, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1]),
    ("polynomial", &[0.1, 0.09344444444444444, 0.08711111111111113, 0.08100000000000002, 0.07511111111111113, 0.06944444444444446, 0.06400000000000002, 0.05877777777777778, 0.0537777777777778, 0.049, 0.04444444444444446, 0.04011111111111111, 0.036000000000000004, 0.03211111111111111, 0.028444444444444446, 0.025, 0.02177777777777778, 0.018777777777777782, 0.016000000000000007, 0.013444444444444453, 0.01111111111111112, 0.009000000000000008, 0.007111111111111118, 0.005444444444444446, 0.004000000000000001, 0.0027777777777777788, 0.0017777777777777787, 0.0010000000000000005, 0.00044444444444444463, 0.00011111111111111116, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0]),
    ("multiplicative", &[0.1, 0.095, 0.09025, 0.0857375, 0.08145062499999998, 0.07737809374999999, 0.07350918906249998, 0.06983372960937498, 0.06634204312890622, 0.0630249409724609, 0.05987369392383786, 0.05688000922764597, 0.05403600876626367, 0.05133420832795048, 0.04876749791155295, 0.046329123015975304, 0.04401266686517654, 0.04181203352191771, 0.039721431845821824, 0.037735360253530734, 0.035848592240854196, 0.03405616262881148, 0.03235335449737091, 0.030735686772502362, 0.029198902433877242, 0.027738957312183378, 0.026352009446574207, 0.025034408974245494, 0.023782688525533217, 0.022593554099256556, 0.021463876394293726, 0.020390682574579037, 0.019371148445850084, 0.01840259102355758, 0.0174824614723797, 0.016608338398760712, 0.015777921478822676, 0.014989025404881541, 0.014239574134637464, 0.01352759542790559]),
    ("cyclic triangular", &[0.01, 0.028000000000000004, 0.046000000000000006, 0.064, 0.082, 0.1, 0.07, 0.04, 0.01, 0.028000000000000004, 0.046000000000000006, 0.064, 0.082, 0.1, 0.07, 0.04, 0.01, 0.028000000000000004, 0.046000000000000006, 0.064, 0.082, 0.1, 0.07, 0.04, 0.01, 0.028000000000000004, 0.046000000000000006, 0.064, 0.082, 0.1, 0.07, 0.04, 0.01, 0.028000000000000004, 0.046000000000000006, 0.064, 0.082, 0.1, 0.07, 0.04]),
    ("cyclic triangular2", &[0.01, 0.0325, 0.05500000000000001, 0.0775, 0.1, 0.0775, 0.05500000000000001, 0.0325, 0.01, 0.02125, 0.0325, 0.043750000000000004, 0.05500000000000001, 0.043750000000000004, 0.0325, 0.02125, 0.01, 0.015625, 0.02125, 0.026875000000000003, 0.0325, 0.026875000000000003, 0.02125, 0.015625, 0.01, 0.012812500000000001, 0.015625, 0.018437500000000002, 0.02125, 0.018437500000000002, 0.015625, 0.012812500000000001, 0.01, 0.01140625, 0.012812500000000001, 0.01421875, 0.015625, 0.01421875, 0.012812500000000001, 0.01140625]),
    ("cyclic exp_range", &[0.01, 0.02454999999999999, 0.03822700000000001, 0.05107028500000001, 0.06311756859999999, 0.07440505192750001, 0.08496748044360998, 0.07059871335858472, 0.05702460156626178, 0.04421039763945543, 0.032122723806847824, 0.020729521046321225, 0.01, 0.020095406352483587, 0.02958508832381826, 0.038496303511155516, 0.046855219207761103, 0.05468695328941041, 0.06201561362887367, 0.05204595435000625, 0.0426276605756048, 0.03373662306875251, 0.02534968291779332, 0.01744459621512972, 0.01, 0.01700462057881559, 0.023588963922902204, 0.029771942507822724, 0.0355717123101174, 0.041005701176017324, 0.04609063616888418, 0.0391732642365147, 0.032638453047535425, 0.026469474592082015, 0.020650260236213025, 0.015165376214563332, 0.01, 0.014860102480282664, 0.019428598811748268, 0.023718611271093773]),
    ("chained constant exponential", &[0.05, 0.045000000000000005, 0.04050000000000001, 0.03645000000000001, 0.06561000000000002, 0.05904900000000002, 0.05314410000000002, 0.04782969000000002, 0.043046721000000024, 0.03874204890000002, 0.03486784401000002, 0.03138105960900001, 0.028242953648100012, 0.025418658283290013, 0.022876792454961013, 0.020589113209464913, 0.01853020188851842, 0.01667718169966658, 0.015009463529699923, 0.013508517176729932, 0.01215766545905694, 0.010941898913151246, 0.009847709021836121, 0.00886293811965251, 0.007976644307687259, 0.007178979876918534, 0.006461081889226681, 0.005814973700304013, 0.005233476330273611, 0.00471012869724625, 0.004239115827521626, 0.0038152042447694634, 0.003433683820292517, 0.0030903154382632653, 0.002781283894436939, 0.002503155504993245, 0.0022528399544939205, 0.0020275559590445286, 0.0018248003631400759, 0.0016423203268260682]),
    ("chained linear step", &[0.020000000000000004, 0.028000000000000004, 0.03600000000000001, 0.04400000000000002, 0.052000000000000025, 0.060000000000000026, 0.06800000000000003, 0.07600000000000004, 0.08400000000000003, 0.09200000000000004, 0.10000000000000003, 0.10000000000000003, 0.10000000000000003, 0.10000000000000003, 0.10000000000000003, 0.05000000000000002, 0.05000000000000002, 0.05000000000000002, 0.05000000000000002, 0.05000000000000002, 0.05000000000000002, 0.05000000000000002, 0.05000000000000002, 0.05000000000000002, 0.05000000000000002, 0.05000000000000002, 0.05000000000000002, 0.05000000000000002, 0.05000000000000002, 0.05000000000000002, 0.02500000000000001, 0.02500000000000001, 0.02500000000000001, 0.02500000000000001, 0.02500000000000001, 0.02500000000000001, 0.02500000000000001, 0.02500000000000001, 0.02500000000000001, 0.02500000000000001]),
];

/// `scripts/torch_schedules.py`'s metrics and ReduceLROnPlateau's learning rate after each.
#[rustfmt::skip]
const METRICS: &[f64] = &[1.0, 0.8, 0.7, 0.7, 0.69995, 0.71, 0.7, 0.65, 0.65, 0.65, 0.65, 0.64, 0.66, 0.66, 0.66, 0.66, 0.66, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5];
#[rustfmt::skip]
const PLATEAU: &[(&str, &[f64])] = &[
    ("defaults patience 2", &[0.1, 0.1, 0.1, 0.1, 0.1, 0.010000000000000002, 0.010000000000000002, 0.010000000000000002, 0.010000000000000002, 0.010000000000000002, 0.0010000000000000002, 0.0010000000000000002, 0.0010000000000000002, 0.0010000000000000002, 0.00010000000000000003, 0.00010000000000000003, 0.00010000000000000003, 0.00010000000000000003, 0.00010000000000000003, 0.00010000000000000003, 1.0000000000000004e-05, 1.0000000000000004e-05, 1.0000000000000004e-05, 1.0000000000000004e-06, 1.0000000000000004e-06, 1.0000000000000004e-06, 1.0000000000000005e-07, 1.0000000000000005e-07, 1.0000000000000005e-07, 1.0000000000000005e-08]),
    ("abs threshold cooldown", &[0.1, 0.1, 0.1, 0.1, 0.05, 0.05, 0.05, 0.05, 0.05, 0.025, 0.025, 0.025, 0.025, 0.0125, 0.0125, 0.0125, 0.0125, 0.0125, 0.0125, 0.00625, 0.00625, 0.00625, 0.00625, 0.003125, 0.003125, 0.003125, 0.003125, 0.0015625, 0.0015625, 0.0015625]),
    ("max mode min_lr", &[0.1, 0.03, 0.009, 0.004, 0.004, 0.004, 0.004, 0.004, 0.004, 0.004, 0.004, 0.004, 0.004, 0.004, 0.004, 0.004, 0.004, 0.004, 0.004, 0.004, 0.004, 0.004, 0.004, 0.004, 0.004, 0.004, 0.004, 0.004, 0.004, 0.004]),
    ("max abs eps", &[0.1, 0.1, 0.1, 0.1, 0.05, 0.05, 0.05, 0.05, 0.025, 0.025, 0.025, 0.025, 0.025, 0.025, 0.025, 0.025, 0.025, 0.025, 0.025, 0.025, 0.025, 0.025, 0.025, 0.025, 0.025, 0.025, 0.025, 0.025, 0.025, 0.025]),
];

/// `scripts/torch_schedules.py`'s momentum cycling: the optimizer's momentum (SGD) or
/// betas[0] (Adam) at optimizer steps 0..40.
#[rustfmt::skip]
const MOMENTA: &[(&str, &[f64])] = &[
    ("one cycle sgd momentum", &[0.95, 0.9479746486807248, 0.942062676641559, 0.9327430366972642, 0.9207707506500943, 0.9071157419136642, 0.8928842580863358, 0.8792292493499057, 0.8672569633027357, 0.8579373233584409, 0.8520253513192751, 0.85, 0.8503143895053379, 0.8512536043909088, 0.8528058334845816, 0.854951556604879, 0.8576637900385857, 0.8609084258765984, 0.8646446609406726, 0.8688255099070633, 0.8733983961742331, 0.878305813044122, 0.8834860469022416, 0.8888739533021842, 0.8944017761948346, 0.8999999999999999, 0.9055982238051654, 0.9111260466978157, 0.9165139530977583, 0.9216941869558779, 0.9266016038257667, 0.9311744900929366, 0.9353553390593273, 0.9390915741234015, 0.9423362099614142, 0.945048443395121, 0.9471941665154183, 0.9487463956090911, 0.949685610494662, 0.95]),
    ("one cycle adam beta1", &[0.92, 0.9163815572471545, 0.9059626665871388, 0.89, 0.8704188906600159, 0.8495811093399842, 0.8300000000000001, 0.8140373334128613, 0.8036184427528456, 0.8, 0.8003286862779037, 0.8013111439559717, 0.8029366090222908, 0.805187272541444, 0.8080384757729338, 0.8114589803375032, 0.8154113104713564, 0.8198521636184686, 0.8247328848624517, 0.8300000000000001, 0.835595801415452, 0.8414589803375032, 0.8475252985509345, 0.8537282922039409, 0.8600000000000001, 0.8662717077960592, 0.8724747014490656, 0.8785410196624969, 0.884404198584548, 0.89, 0.8952671151375484, 0.9001478363815315, 0.9045886895286437, 0.9085410196624969, 0.9119615242270663, 0.9148127274585561, 0.9170633909777093, 0.9186888560440284, 0.9196713137220964, 0.92]),
    ("cyclic sgd momentum", &[0.9, 0.88, 0.86, 0.8400000000000001, 0.8200000000000001, 0.8, 0.8333333333333334, 0.8666666666666667, 0.9, 0.88, 0.86, 0.8400000000000001, 0.8200000000000001, 0.8, 0.8333333333333334, 0.8666666666666667, 0.9, 0.88, 0.86, 0.8400000000000001, 0.8200000000000001, 0.8, 0.8333333333333334, 0.8666666666666667, 0.9, 0.88, 0.86, 0.8400000000000001, 0.8200000000000001, 0.8, 0.8333333333333334, 0.8666666666666667, 0.9, 0.88, 0.86, 0.8400000000000001, 0.8200000000000001, 0.8, 0.8333333333333334, 0.8666666666666667]),
    ("cyclic triangular2 adam beta1", &[0.95, 0.9249999999999999, 0.8999999999999999, 0.875, 0.85, 0.875, 0.8999999999999999, 0.9249999999999999, 0.95, 0.9375, 0.9249999999999999, 0.9125, 0.8999999999999999, 0.9125, 0.9249999999999999, 0.9375, 0.95, 0.94375, 0.9375, 0.9312499999999999, 0.9249999999999999, 0.9312499999999999, 0.9375, 0.94375, 0.95, 0.9468749999999999, 0.94375, 0.9406249999999999, 0.9375, 0.9406249999999999, 0.94375, 0.9468749999999999, 0.95, 0.9484374999999999, 0.9468749999999999, 0.9453125, 0.94375, 0.9453125, 0.9468749999999999, 0.9484374999999999]),
];

fn schedule(label: &str) -> Box<dyn Schedule> {
    match label {
        "step" => StepLr::with_gamma(7, 0.5).unwrap().into(),
        "multistep" => MultiStepLr::new(vec![3, 10, 10, 25], 0.3).unwrap().into(),
        "exponential" => ExponentialLr::new(0.93).unwrap().into(),
        "cosine" => CosineAnnealingLr::new(15, 0.001).unwrap().into(),
        "linear" => LinearLr::new(0.1, 1.0, 12).unwrap().into(),
        "warm restarts" => CosineAnnealingWarmRestarts::new(5, 2, 0.002).unwrap().into(),
        "warm restarts mult 1" => CosineAnnealingWarmRestarts::new(6, 1, 0.0).unwrap().into(),
        "one cycle" => OneCycleLr::new(0.1, 40).unwrap().into(),
        "warmup then cosine" => SequentialLr::new(
            vec![LinearLr::new(0.01, 1.0, 8).unwrap().into(), CosineAnnealingLr::new(32, 0.0).unwrap().into()],
            vec![8],
        )
        .unwrap()
        .into(),
        "constant" => ConstantLr::new(0.25, 6).unwrap().into(),
        "polynomial" => PolynomialLr::new(30, 2.0).unwrap().into(),
        "multiplicative" => MultiplicativeLr::new(0.95).unwrap().into(),
        "cyclic triangular" => CyclicLr::with_shape(0.01, 0.1, 5, 3, CyclicMode::Triangular).unwrap().into(),
        "cyclic triangular2" => CyclicLr::with_shape(0.01, 0.1, 4, 4, CyclicMode::Triangular2).unwrap().into(),
        "cyclic exp_range" => {
            CyclicLr::with_shape(0.01, 0.1, 6, 6, CyclicMode::ExpRange { gamma: 0.97 }).unwrap().into()
        }
        "chained constant exponential" => {
            ChainedLr::new(vec![ConstantLr::new(0.5, 4).unwrap().into(), ExponentialLr::new(0.9).unwrap().into()])
                .unwrap()
                .into()
        }
        "chained linear step" => ChainedLr::new(vec![
            LinearLr::new(0.2, 1.0, 10).unwrap().into(),
            StepLr::with_gamma(15, 0.5).unwrap().into(),
        ])
        .unwrap()
        .into(),
        other => panic!("no schedule {other}"),
    }
}

fn plateau(label: &str) -> ReduceLrOnPlateau {
    let p = ReduceLrOnPlateau::new();
    match label {
        "defaults patience 2" => p.with_patience(2),
        "abs threshold cooldown" => p
            .with_patience(1)
            .with_threshold(0.01, ThresholdMode::Abs)
            .unwrap()
            .with_cooldown(2)
            .with_factor(0.5)
            .unwrap(),
        "max mode min_lr" => {
            p.with_mode(PlateauMode::Max).with_patience(0).with_factor(0.3).unwrap().with_min_lr(0.004).unwrap()
        }
        "max abs eps" => p
            .with_mode(PlateauMode::Max)
            .with_patience(3)
            .with_threshold(0.001, ThresholdMode::Abs)
            .unwrap()
            .with_eps(0.02)
            .unwrap()
            .with_factor(0.5)
            .unwrap(),
        other => panic!("no plateau configuration {other}"),
    }
}

#[test]
fn reduce_lr_on_plateau_matches_torchs_sequences() {
    // The same f64 products as torch (`lr * factor`, compared with `min_lr` and `eps`): equal.
    for (label, lrs) in PLATEAU {
        let mut p = plateau(label);
        let mut lr = 0.1;
        for (epoch, (&metric, &want)) in METRICS.iter().zip(lrs.iter()).enumerate() {
            lr = p.step(metric, lr);
            assert_eq!(lr, want, "{label} epoch {epoch}");
        }
        assert_eq!(p.epochs(), METRICS.len() as u64);
        // The counters round-trip through serde, and the copy goes on the same way.
        let json = serde_json::to_string(&p).unwrap();
        let mut back: ReduceLrOnPlateau = serde_json::from_str(&json).unwrap();
        assert_eq!(back, p, "{label}");
        assert_eq!(back.step(0.1, lr), p.step(0.1, lr), "{label}");
    }
    assert!(ReduceLrOnPlateau::new().with_factor(1.0).unwrap_err().to_string().contains("Factor should be < 1.0."));
    for refused in [
        ReduceLrOnPlateau::new().with_factor(-0.5).map(|_| ()),
        ReduceLrOnPlateau::new().with_factor(f64::NAN).map(|_| ()),
        ReduceLrOnPlateau::new().with_min_lr(-1.0).map(|_| ()),
        ReduceLrOnPlateau::new().with_eps(f64::INFINITY).map(|_| ()),
        ReduceLrOnPlateau::new().with_threshold(-1e-4, ThresholdMode::Rel).map(|_| ()),
    ] {
        assert!(matches!(refused, Err(Error::InvalidHyperParameter { .. })), "{refused:?}");
    }
}

#[test]
fn schedules_match_torchs_sequences() {
    // torch updates recursively (multiplying the previous lr) where this crate uses the closed
    // form; the two differ by rounding only: a few f64 ulps per step over 40 steps.
    for (label, lrs) in TORCH {
        let s = schedule(label);
        for (k, &want) in lrs.iter().enumerate() {
            let got = s.lr(0.1, k as u64);
            assert!((got - want).abs() <= 1e-13 * want.abs().max(1e-3), "{label} step {k}: {got} vs torch {want}");
        }
    }
}

#[test]
fn keras_cosine_decay_restarts_follows_its_formula() {
    // Worked from Keras' definition: first cycle of 10 steps, then 20 (t_mul 2), peaks
    // scaled by m_mul^i, floor alpha not scaled. Keras evaluates in f32: compare to 1e-6.
    let s = CosineDecayRestarts::with_shape(10, 2.0, 0.5, 0.1).unwrap();
    let lr = |k: u64| s.lr(1.0, k);
    let expect = |i: i32, f: f64| 0.9 * 0.5 * 0.5f64.powi(i) * (1.0 + (std::f64::consts::PI * f).cos()) + 0.1;
    for (k, i, f) in [(0, 0, 0.0), (5, 0, 0.5), (9, 0, 0.9), (10, 1, 0.0), (20, 1, 0.5), (29, 1, 0.95), (30, 2, 0.0)] {
        assert!((lr(k) - expect(i, f)).abs() < 1e-6, "step {k}: {} vs {}", lr(k), expect(i, f));
    }
    let s = CosineDecayRestarts::new(4).unwrap();
    assert!((s.lr(0.5, 4) - 0.5).abs() < 1e-7 && (s.lr(0.5, 2) - 0.25).abs() < 1e-7);
}

#[test]
fn invalid_schedules_are_refused_with_torchs_messages() {
    let msg = |r: Result<LinearLr, Error>| match r {
        Err(Error::InvalidHyperParameter { message, .. }) => message,
        other => panic!("expected an error, got {other:?}"),
    };
    assert_eq!(
        msg(LinearLr::new(0.0, 1.0, 5)),
        "Starting multiplicative factor expected to be greater than 0 and less or equal to 1."
    );
    assert_eq!(msg(LinearLr::new(0.5, 1.5, 5)), "Ending multiplicative factor expected to be between 0 and 1.");
    assert!(CosineAnnealingWarmRestarts::new(0, 1, 0.0).is_err());
    assert!(CosineAnnealingWarmRestarts::new(5, 0, 0.0).is_err());
    assert!(StepLr::new(0).is_err());
    assert!(CosineDecayRestarts::new(0).is_err());
    assert!(OneCycleLr::new(0.1, 0).is_err());
    assert!(SequentialLr::new(vec![ExponentialLr::new(0.9).unwrap().into()], vec![3]).is_err());
}

#[test]
fn a_schedule_drives_k_steps_per_submit_on_the_gpu() {
    // 30 steps of warmup-then-cosine as 3 submits of 10 steps give the same bits as 30
    // calls that set each step's learning rate by hand, and agree with the CPU.
    let ctx = ctx();
    let n = 2053;
    let g = grads(n, 1);
    let sched = || schedule("warmup then cosine");
    let mut scheduled = GpuOptimizer::new(&ctx, AdamW::new(0.1), &params(n)).unwrap();
    scheduled.set_schedule(Some(sched())).unwrap();
    scheduled.grads().write(&ctx, &g).unwrap();
    for _ in 0..3 {
        scheduled.run(10).unwrap();
    }
    let mut by_hand = GpuOptimizer::new(&ctx, AdamW::new(0.1), &params(n)).unwrap();
    by_hand.grads().write(&ctx, &g).unwrap();
    let s = sched();
    for k in 0..30 {
        by_hand.set_lr(s.lr(0.1, k)).unwrap();
        by_hand.run(1).unwrap();
    }
    assert_eq!(scheduled.read_params().unwrap(), by_hand.read_params().unwrap());
    assert!((scheduled.optimizer().lr() - s.lr(0.1, 29)).abs() < 1e-15);

    let mut cpu = CpuOptimizer::new(AdamW::new(0.1), &params(n)).unwrap();
    cpu.set_schedule(Some(sched())).unwrap();
    for _ in 0..30 {
        cpu.step(&g).unwrap();
    }
    let budget = AdamW::default().kernel().step_error_budget;
    use wgpu_optim::Optimizer;
    assert_close(
        "scheduled",
        scheduled.read_params().unwrap().as_slice().unwrap(),
        cpu.params().as_slice().unwrap(),
        0.1,
        30,
        budget,
    );
}

#[test]
fn every_schedule_is_built_by_a_validating_constructor() {
    let refused = |r: Result<(), Error>, what: &str| {
        let e = r.expect_err(what);
        assert!(matches!(e, Error::InvalidHyperParameter { .. }), "{what}: {e}");
    };
    refused(ExponentialLr::new(f64::NAN).map(|_| ()), "NaN gamma");
    refused(ExponentialLr::new(-0.5).map(|_| ()), "negative gamma");
    refused(StepLr::with_gamma(3, f64::INFINITY).map(|_| ()), "infinite gamma");
    refused(MultiStepLr::new(vec![2, 4], -1.0).map(|_| ()), "negative gamma");
    refused(CosineAnnealingLr::new(0, 0.0).map(|_| ()), "t_max 0");
    refused(CosineAnnealingLr::new(10, -1e-3).map(|_| ()), "negative eta_min");
    refused(CosineAnnealingWarmRestarts::new(0, 1, 0.0).map(|_| ()), "t_0 0");
    refused(CosineAnnealingWarmRestarts::new(5, 0, 0.0).map(|_| ()), "t_mult 0");
    refused(CosineDecayRestarts::with_shape(10, 2.0, 1.0, 2.0).map(|_| ()), "alpha 2");
    refused(OneCycleLr::with_phases(0.1, 100, 1.5, 25.0, 1e4).map(|_| ()), "pct_start 1.5");
    refused(OneCycleLr::with_phases(f64::NAN, 100, 0.3, 25.0, 1e4).map(|_| ()), "NaN max_lr");
    assert!(OneCycleLr::with_phases(0.1, 100, 0.3, 25.0, 1e4).is_ok());
    refused(ConstantLr::new(1.5, 3).map(|_| ()), "factor 1.5");
    refused(PolynomialLr::new(0, 1.0).map(|_| ()), "total_iters 0");
    refused(PolynomialLr::new(10, -1.0).map(|_| ()), "negative power");
    refused(MultiplicativeLr::new(0.0).map(|_| ()), "factor 0");
    refused(CyclicLr::new(-0.1, 0.1, 5).map(|_| ()), "negative base_lr");
    refused(CyclicLr::with_shape(0.01, 0.1, 0, 0, CyclicMode::Triangular).map(|_| ()), "a cycle of no steps");
    refused(CyclicLr::with_shape(0.01, 0.1, u64::MAX, 1, CyclicMode::Triangular).map(|_| ()), "overflowing cycle");
    refused(CyclicLr::with_shape(0.01, 0.1, 5, 5, CyclicMode::ExpRange { gamma: 1.5 }).map(|_| ()), "gamma 1.5");
    refused(ChainedLr::new(Vec::new()).map(|_| ()), "no schedules");
    let constant = ConstantLr::new(1.5, 3).unwrap_err().to_string();
    assert!(constant.contains("Constant multiplicative factor expected to be between 0 and 1."), "{constant}");
}

/// A schedule of the caller's own that yields no learning rate.
#[derive(Clone, Debug)]
struct Broken;

impl Schedule for Broken {
    fn lr(&self, _base: f64, _k: u64) -> f64 {
        f64::NAN
    }
    fn clone_box(&self) -> Box<dyn Schedule> {
        Box::new(self.clone())
    }
    fn config(&self) -> serde_json::Value {
        serde_json::json!({ "Broken": {} })
    }
}

#[test]
fn set_schedule_has_one_signature_and_refuses_a_schedule_the_optimizer_would_refuse() {
    let ctx = ctx();
    let mut gpu = GpuOptimizer::new(&ctx, AdamW::new(1e-2), &params(16)).unwrap();
    let mut cpu = CpuOptimizer::new(AdamW::new(1e-2), &params(16)).unwrap();
    for result in [gpu.set_schedule(Some(Box::new(Broken))), cpu.set_schedule(Some(Box::new(Broken)))] {
        match result {
            Err(Error::InvalidHyperParameter { message, .. }) => assert!(message.contains("nan"), "{message}"),
            other => panic!("expected a refusal, got {other:?}"),
        }
    }
    // Nothing was attached: the steps run at the configured learning rate, as without one.
    let mut plain = CpuOptimizer::new(AdamW::new(1e-2), &params(16)).unwrap();
    cpu.step(&grads(16, 1)).unwrap();
    plain.step(&grads(16, 1)).unwrap();
    assert_eq!(cpu.params(), plain.params());
    assert!(gpu.set_schedule(Some(ExponentialLr::new(0.9).unwrap().into())).is_ok());
    assert!(gpu.set_schedule(None).is_ok());
}

fn cycling(label: &str) -> Box<dyn Schedule> {
    match label {
        "one cycle sgd momentum" => OneCycleLr::new(0.1, 40).unwrap().with_momentum_cycle(0.85, 0.95).unwrap().into(),
        "one cycle adam beta1" => {
            OneCycleLr::with_phases(0.1, 40, 0.25, 25.0, 1e4).unwrap().with_momentum_cycle(0.8, 0.92).unwrap().into()
        }
        "cyclic sgd momentum" => CyclicLr::with_shape(0.01, 0.1, 5, 3, CyclicMode::Triangular)
            .unwrap()
            .with_momentum_cycle(0.8, 0.9)
            .unwrap()
            .into(),
        "cyclic triangular2 adam beta1" => CyclicLr::with_shape(0.01, 0.1, 4, 4, CyclicMode::Triangular2)
            .unwrap()
            .with_momentum_cycle(0.85, 0.95)
            .unwrap()
            .into(),
        other => panic!("no schedule {other}"),
    }
}

#[test]
fn cycled_momenta_match_torchs_and_drive_the_optimizer() {
    use wgpu_optim::{Adam, Optimizer, Sgd};
    for (label, momenta) in MOMENTA {
        let s = cycling(label);
        for (k, &want) in momenta.iter().enumerate() {
            let got = s.momentum(k as u64).unwrap();
            assert!((got - want).abs() <= 1e-14, "{label} step {k}: {got} vs torch {want}");
        }
        // On the CPU: each step's optimizer holds the schedule's momentum (and learning rate).
        let o: Box<dyn Optimizer> =
            if label.contains("sgd") { Sgd::new(0.1).with_momentum(0.9).into() } else { Adam::new(0.1).into() };
        let mut cpu = CpuOptimizer::new(o, &params(8)).unwrap();
        cpu.set_schedule(Some(s.clone())).unwrap();
        for k in 0..5u64 {
            cpu.step(&grads(8, k as usize + 1)).unwrap();
            assert_eq!(cpu.optimizer().momentum(), Some(s.momentum(k).unwrap()), "{label} after step {k}");
            assert_eq!(cpu.optimizer().lr(), s.lr(0.1, k), "{label} after step {k}");
        }
    }
    // Cycling needs a momentum the optimizer keeps state for.
    let one_cycle = || -> Box<dyn Schedule> { cycling("one cycle sgd momentum") };
    let mut plain = CpuOptimizer::new(Sgd::new(0.1), &params(8)).unwrap();
    assert!(
        matches!(plain.set_schedule(Some(one_cycle())), Err(Error::InvalidHyperParameter { .. })),
        "SGD without momentum"
    );
    let mut adagrad = CpuOptimizer::new(wgpu_optim::Adagrad::new(0.1), &params(8)).unwrap();
    assert!(matches!(adagrad.set_schedule(Some(one_cycle())), Err(Error::InvalidHyperParameter { .. })), "Adagrad");
    assert!(OneCycleLr::new(0.1, 40).unwrap().with_momentum_cycle(0.0, 0.9).is_err(), "a base momentum of 0");
    assert!(CyclicLr::new(0.01, 0.1, 5).unwrap().with_momentum_cycle(0.95, 0.9).is_err(), "base above max");
}

#[test]
fn a_momentum_cycle_drives_k_steps_per_submit_on_the_gpu_and_resumes_from_a_checkpoint() {
    use wgpu_optim::{Optimizer, Sgd};
    let ctx = ctx();
    let n = 1000;
    let make = || Sgd::new(0.1).with_momentum(0.9).with_nesterov(true);
    let s = || cycling("one cycle sgd momentum");
    let g = grads(n, 1);
    let mut calls = GpuOptimizer::new(&ctx, make(), &params(n)).unwrap();
    calls.set_schedule(Some(s())).unwrap();
    let mut cpu = CpuOptimizer::new(make(), &params(n)).unwrap();
    cpu.set_schedule(Some(s())).unwrap();
    for _ in 0..12 {
        calls.step(&g).unwrap();
        cpu.step(&g).unwrap();
    }
    let mut resident = GpuOptimizer::new(&ctx, make(), &params(n)).unwrap();
    resident.set_schedule(Some(s())).unwrap();
    resident.grads().write(&ctx, &g).unwrap();
    resident.run(12).unwrap();
    let bits = |o: &GpuOptimizer| o.read_params().unwrap().iter().map(|x| x.to_bits()).collect::<Vec<_>>();
    assert_eq!(bits(&calls), bits(&resident), "12 steps in one submit vs 12 calls");
    assert_eq!(resident.optimizer().momentum(), Some(s().momentum(11).unwrap()));
    let budget = make().kernel().step_error_budget;
    assert_close(
        "one cycle",
        &calls.read_params().unwrap().to_vec(),
        cpu.params().as_slice().unwrap(),
        0.1,
        12,
        budget,
    );
    // Saved mid-cycle: a new optimizer with the same schedule loads it and goes on as the
    // run that never stopped.
    let path = std::env::temp_dir().join(format!("wgpu-optim-momentum-cycle-{}.safetensors", std::process::id()));
    calls.save(&path).unwrap();
    let now = calls.read_params().unwrap().to_vec();
    let mut resumed = GpuOptimizer::new(&ctx, make(), &now).unwrap();
    resumed.set_schedule(Some(s())).unwrap();
    resumed.load(&path).unwrap();
    for _ in 0..5 {
        calls.step(&g).unwrap();
        resumed.step(&g).unwrap();
    }
    assert_eq!(bits(&calls), bits(&resumed), "resumed mid-cycle");
    std::fs::remove_file(&path).ok();
}
